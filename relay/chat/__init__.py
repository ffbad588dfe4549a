"""The chat layer: every chat operation and event, once, for every edge (DESIGN §2)."""
