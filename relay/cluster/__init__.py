"""Cluster mode: what lets several Relay processes share one community through Redis."""
