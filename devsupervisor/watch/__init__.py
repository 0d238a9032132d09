"""Change detection: which source files changed, by content."""
