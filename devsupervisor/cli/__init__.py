"""The `devsup` command line."""
