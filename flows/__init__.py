"""Prefect flows: each reads like the lifecycle step it runs."""
