"""Files behind fsspec: the temp → artifacts → orphans life cycle, path confinement and sha256.

The one boundary where fsspec and OS errors become wire errors (``blocking``). ``FileStore`` is built
from one part per job, all on the same ``StorageRoot``:

- ``layout``: the three folders, safe names, where an artifact or an orphan goes;
- ``confine``: an agent's URI becomes a path under ``temp/`` or is refused;
- ``staging``: an upload is opened once, without following a link, and hashed from that descriptor;
- ``placing``: the hashed bytes are moved into ``artifacts/``; orphaning and removal;
- ``listing``: walks of a folder for cleanup, and signed URLs for readers;
- ``verifying``: a placed file read again (size, sha256) for the scrubber.
"""

from __future__ import annotations

from service.files.blocking import INLINE_FILE_BYTES, _call
from service.files.confine import Confinement
from service.files.layout import ARTIFACTS, NAME_MAX_BYTES, ORPHANS, TEMP, FileInfo, modified_time, safe_segment
from service.files.listing import Listing
from service.files.placing import Placing
from service.files.staging import Staging, Upload
from service.files.verifying import OnBytes, StoredBytes, Verifying


class FileStore(Confinement, Staging, Placing, Listing, Verifying):
    """Paths here are fsspec paths (no scheme); ``url()`` gives the URI agents see."""


__all__ = [
    "ARTIFACTS",
    "INLINE_FILE_BYTES",
    "NAME_MAX_BYTES",
    "ORPHANS",
    "TEMP",
    "FileInfo",
    "FileStore",
    "OnBytes",
    "StoredBytes",
    "Upload",
    "_call",
    "modified_time",
    "safe_segment",
]
