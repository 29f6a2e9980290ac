"""Kubernetes manifests for the shop: the generator (python -m k8s.generate) and cluster tools."""
