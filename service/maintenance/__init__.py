"""Maintenance: the cleanup scopes and their registry, startup recovery, the periodic run.

Importing the package registers the built-in scopes; other domains call ``register_scope`` for theirs.
"""

from service.maintenance import data_scopes, file_scopes
from service.maintenance.cleanup import ORDER, CleanupRun, ScopeFn, register_scope, registered_scopes, run_cleanup
from service.maintenance.periodic import Maintenance, install
from service.maintenance.recovery import recover

__all__ = [
    "ORDER",
    "CleanupRun",
    "Maintenance",
    "ScopeFn",
    "data_scopes",
    "file_scopes",
    "install",
    "recover",
    "register_scope",
    "registered_scopes",
    "run_cleanup",
]
