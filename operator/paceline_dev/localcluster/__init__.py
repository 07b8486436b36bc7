"""The embedded local cluster: a real control plane, fake heterogeneous GPU nodes and a process runtime.

Dev/test only. Every address it binds or contacts is loopback.
"""
