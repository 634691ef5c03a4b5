"""Placeholder: filled in by the test-harness work."""
