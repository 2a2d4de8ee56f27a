"""The spill buffer's directory: what the agent's client writes and what an operator's view counts.

The client (``buffer``) owns these files; the worker's ``top`` only reads them. Both take the layout from
here, since the worker does not import the client::

    pending/     one file per command, named <sequence>-<envelope id>.cmd; replay order = name order;
                 beside a register_artifact, <same name>.blob: a copy of the artifact's bytes
    tmp/         files being written (temp name + fsync + rename: a crash leaves a whole file or none)
    quarantine/  files that were not valid items (cut, empty, garbage, foreign), with a .reason.json note
    failed/      commands the worker refused for good, with the error beside them (.error.json)
    replay.lock  flock held by whoever replays, so two clients never send the same item at once
    spill.lock   flock held while a command and its file copy are put in place or taken away, so a
                 client opening the buffer never mistakes a copy whose command is being written for debris
"""

from __future__ import annotations

from pathlib import Path

PENDING, TMP, QUARANTINE, FAILED = "pending", "tmp", "quarantine", "failed"
ITEM_SUFFIX = ".cmd"
BLOB_SUFFIX = ".blob"
REASON_NOTE = ".reason.json"
"""Appended to a quarantined file's name: why it was set aside."""
ERROR_NOTE = ".error.json"
"""Appended to a failed command's name: the worker's error."""
REPLAY_LOCK = "replay.lock"
SPILL_LOCK = "spill.lock"


def count_items(folder: Path) -> int:
    """Files set aside, one per command: notes do not count, nor a file copy kept with its command."""
    names = {p.name for p in folder.iterdir()}
    count = 0
    for name in names:
        if name.endswith((REASON_NOTE, ERROR_NOTE)):
            continue
        if name.endswith(BLOB_SUFFIX) and name[: -len(BLOB_SUFFIX)] + ITEM_SUFFIX in names:
            continue
        count += 1
    return count
