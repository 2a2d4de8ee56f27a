"""Thread actions through the wire."""
