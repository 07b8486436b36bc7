"""The I/O adapters: the Kubernetes API (kube) and the workers and parameter servers (workers)."""
