"""Relay: a self-hosted real-time chat and voice server on Trio."""

__version__ = "0.1.0"
