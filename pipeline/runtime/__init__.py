"""Where a run runs: its Ray (a cluster or its own), the machine's CPU features, local and s3:// storage, and
the code's version."""
