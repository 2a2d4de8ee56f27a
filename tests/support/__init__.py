"""Shared test support: finding a broker and a database, running a worker, talking to it as an agent."""
