"""Start-up checks, stage by stage, so a failed start blames the system at fault in one line.

A start passes five stages in order: settings, database, storage root, broker, ports. Each check does the
cheapest real operation of its stage (parse the settings, connect to the database, look at the storage root,
log in to the broker, bind the metrics port) before the worker starts anything, so a wrong password on the
broker does not leave a half-started worker behind. The exception each stage raises is classified; a known
mistake becomes a ``StartupError``: one line on stderr, ``storage-worker: <stage>: <what> (<hint>)``, and an
exit code of its own (the table in ``codes``). ``storage-worker --debug`` prints the traceback above that line.

One module per stage (``settings``, ``database``, ``storage``, ``broker``, ``ports``), each with its check and
the classification of its errors; ``checks`` runs them in order and classifies what the real start raised.
"""

from service.startup.checks import explain, preflight
from service.startup.codes import ALL_STAGES, STORES, Exit, Stage, StartupError, report, safe_url, unexpected
from service.startup.settings import load_settings

__all__ = [
    "ALL_STAGES",
    "STORES",
    "Exit",
    "Stage",
    "StartupError",
    "explain",
    "load_settings",
    "preflight",
    "report",
    "safe_url",
    "unexpected",
]
