"""Fixtures of the hostile-agent suite: the wire fixtures of the integration tests, shared here."""

from tests.integration.conftest import outcomes, workers  # noqa: F401 - pytest finds fixtures by name
