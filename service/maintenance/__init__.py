"""Maintenance: the cleanup scopes and their runner, startup recovery, the periodic run."""

from service.maintenance.cleanup import SCOPES, ScopeFn, run_cleanup, stop_cleanups
from service.maintenance.periodic import Maintenance
from service.maintenance.recovery import recover

__all__ = ["SCOPES", "Maintenance", "ScopeFn", "recover", "run_cleanup", "stop_cleanups"]
