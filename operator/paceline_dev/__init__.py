"""Dev and test tools of Paceline — the local cluster (real control plane, fake GPU nodes), the process
runtime standing in for kubelets, and the demo. Not part of the operator package or the worker image."""
