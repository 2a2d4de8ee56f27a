"""Database plumbing: engines, drivers, prepared statements, the single writer, schema."""
