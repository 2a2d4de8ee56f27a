"""The hostile-agent suite: each test sends what an attacker would, on SQLite and PostgreSQL."""
