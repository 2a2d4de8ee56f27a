"""Cleanup, periodic maintenance and startup recovery, through the wire."""
