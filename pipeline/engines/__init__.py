"""Engines the stages call, apart from Ray: each runs and is tested in one process."""
