"""The REST API: Quart blueprints under /v1/api, built from an explicit Runtime."""
