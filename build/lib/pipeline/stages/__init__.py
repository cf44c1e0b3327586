"""Pipeline stages, one job each.  ``pipeline.dag`` composes them in order."""
