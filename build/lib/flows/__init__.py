"""Prefect flows: tables of contents of task calls over ``pipeline``."""
