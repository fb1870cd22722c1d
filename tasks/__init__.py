"""Thin Prefect tasks over the domain in `retrainer/`."""
