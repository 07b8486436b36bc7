"""Paceline: a Kubernetes operator for distributed PyTorch training on heterogeneous GPU clusters."""

__version__ = "0.1.0"
