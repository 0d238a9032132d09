"""Instances: several checkouts of one project side by side (naming, host ports)."""
