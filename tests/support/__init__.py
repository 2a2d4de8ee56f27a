"""Helpers shared by the tests: a broker and databases to use, workers in-process and as processes, agents
that talk to them, and the builders and fakes the tests share. Fixtures stay in ``conftest.py`` files."""
