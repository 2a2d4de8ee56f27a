"""Path confinement: the URI an agent sends becomes a path under ``temp/``, or is refused.

Agents write ``temp/`` and nothing they put there is trusted. Folders on the way are resolved (a root
configured through a link still matches), the file itself never: a link there is refused when it is
opened (``Staging.stage``).
"""

from __future__ import annotations

import os
import posixpath
from urllib.parse import unquote, urlsplit

from contracts import InvalidArgument, PermissionDenied
from service.files.layout import ARTIFACTS, NAME_MAX_BYTES, TEMP, StorageRoot, protocols


class Confinement(StorageRoot):
    def resolve_upload(self, uri: str) -> str:
        """The path of an agent-given source, refused unless it lies under ``temp/``."""
        path = self._path_of(uri)
        if self.is_local:
            folder, name = os.path.split(path)
            if folder != self._temp:  # every upload the client makes lies right in temp/: no lookup then
                path = os.path.join(os.path.realpath(folder), name)
        if not self.in_folder(path, TEMP):
            raise PermissionDenied(
                "uri must point under the storage root's temp/ folder",
                {"uri": uri, "allowed": [self.url(self._temp) + "/"]},
            )
        if _segment_too_long(path):
            raise InvalidArgument(
                f"a name in the uri is longer than {NAME_MAX_BYTES} bytes",
                {"field": "manifest.uri", "uri": uri, "limit_bytes": NAME_MAX_BYTES},
            )
        return path

    def resolve_stored(self, uri: str) -> str:
        """The path of a stored artifact's URI, which the worker wrote: under ``artifacts/``, no link resolved."""
        path = self._path_of(uri)
        if not self.in_folder(path, ARTIFACTS):
            raise PermissionDenied("a stored artifact uri lies outside artifacts/", {"uri": uri})
        return path

    def _path_of(self, uri: str) -> str:
        """The normalised absolute path a URI names on this storage; no link is followed."""
        if "\x00" in uri:
            raise PermissionDenied("uri contains a NUL byte", {"uri": uri})
        parts = urlsplit(uri)
        own = protocols(self.fs)
        scheme = parts.scheme.lower()
        if self.is_local and scheme in ("", "file"):
            raw = unquote(parts.path if scheme else uri)
            if scheme and parts.netloc not in ("", "localhost"):
                raise PermissionDenied("file URIs must not name a host", {"uri": uri})
        elif not self.is_local and scheme in own:
            raw = unquote(parts.netloc + parts.path)
        else:
            raise PermissionDenied(f"uri scheme {scheme or '(none)'!r} is not this storage's", {"uri": uri})
        if "\x00" in raw or ".." in raw.split("/"):
            raise PermissionDenied("uri must not contain '..' segments", {"uri": uri})
        if self.is_local:
            return os.path.normpath(raw if os.path.isabs(raw) else os.path.join(self.root, raw))
        return posixpath.normpath(raw)


def _segment_too_long(path: str) -> bool:
    """A segment over NAME_MAX_BYTES: the whole path in UTF-8 first, so a usual path is one C-level encode."""
    whole = path.encode("utf-8", "surrogatepass")
    return len(whole) > NAME_MAX_BYTES and any(len(part) > NAME_MAX_BYTES for part in whole.split(b"/"))
