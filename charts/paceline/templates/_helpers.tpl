{{- define "paceline.labels" -}}
app.kubernetes.io/name: paceline
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "paceline.selectorLabels" -}}
app.kubernetes.io/name: paceline
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/* Rules on namespaced objects the operator needs wherever it watches TrainingJobs: exactly the requests it
makes (kopf's watches are list + watch; see README "Least privilege" for the audit). */}}
{{- define "paceline.namespacedRules" -}}
- apiGroups: ["paceline.dev"]
  resources: ["trainingjobs"]
  verbs: ["list", "watch"]
- apiGroups: ["paceline.dev"]
  resources: ["trainingjobs/status"]
  verbs: ["patch"]
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["list", "watch", "create", "delete"]
- apiGroups: [""]
  resources: ["services"]
  verbs: ["list", "watch", "create"]
# configmaps: each job's control ConfigMap, and `get` for a model graph named by spec.model.configMapRef
- apiGroups: [""]
  resources: ["configmaps"]
  verbs: ["get", "list", "watch", "create", "patch"]
- apiGroups: [""]
  resources: ["persistentvolumeclaims"]
  verbs: ["list", "watch", "create"]
# secrets: each job's control token (<job>-control-token): created once, read back after a restart; never
# listed or watched, never updated or deleted (the garbage collector removes it with its job)
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["get", "create"]
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create"]
{{- end -}}

{{/* Namespaces whose Paceline pods the NetworkPolicy covers. */}}
{{- define "paceline.networkPolicyNamespaces" -}}
{{- $ns := .Values.networkPolicy.namespaces | default .Values.watchNamespaces | default (list .Release.Namespace) -}}
{{- toJson $ns -}}
{{- end -}}
