"""Prefect tasks: thin wrappers over ``pipeline``."""
