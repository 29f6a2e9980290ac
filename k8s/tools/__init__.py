"""Cluster helpers run by k8s/cluster.mk (the autoscale demo); they only ever call 127.0.0.1."""
