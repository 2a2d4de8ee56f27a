"""Import of pre-worker MindBus storage data: ``storage-worker import DIR`` (see ``service.cli.importer``)."""

from service.importer.legacy import NotLegacyLayout
from service.importer.mapping import LEGACY_ID_LABEL, LEGACY_ID_NAMESPACE, artifact_id
from service.importer.run import Importer, Outcome, Skipped, Summary

__all__ = [
    "LEGACY_ID_LABEL",
    "LEGACY_ID_NAMESPACE",
    "Importer",
    "NotLegacyLayout",
    "Outcome",
    "Skipped",
    "Summary",
    "artifact_id",
]
