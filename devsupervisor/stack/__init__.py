"""The compose stack: compose CLI, Docker events, dependency health."""
