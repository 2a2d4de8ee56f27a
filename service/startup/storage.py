"""The storage-root stage: a local folder this user can write, or an object store whose bucket we can see."""

from __future__ import annotations

from pathlib import Path

from service.settings import Settings
from service.startup.codes import Exit, Stage, StartupError, caused, unexpected
from service.startup.probes import check_writable_folder, concerns, os_reason, quiet

STORAGE_TIMEOUT_S = 20.0


def check_storage(settings: Settings, *, debug: bool = False) -> None:
    """A local root must be a folder this user can create and write; an object store must let us see the bucket.

    Nothing is created here: ``import --dry-run`` changes nothing, and the worker lays out its folders itself.
    """
    from fsspec.utils import get_protocol

    root = settings.storage_root
    protocol = get_protocol(root)
    if protocol in ("file", "local"):
        try:
            check_writable_folder(_local_root(root))
        except OSError as exc:
            raise (storage_error(exc, root) or unexpected(Stage.STORAGE, exc)) from exc
        return
    try:
        with quiet("botocore", "aiobotocore", "s3fs", enabled=not debug):  # botocore logs its endpoint at INFO
            _check_object_store(root, protocol)
    except Exception as exc:
        raise (storage_error(exc, root) or unexpected(Stage.STORAGE, exc)) from exc


def _local_root(root: str) -> Path:
    """The folder of a ``file://`` root, as the file store resolves it."""
    from fsspec.core import url_to_fs

    _, path = url_to_fs(root)
    return Path(path)


def _check_object_store(root: str, protocol: str) -> None:
    from fsspec.core import url_to_fs

    options: dict[str, object] = {"use_listings_cache": False, "skip_instance_cache": True}
    if protocol in ("s3", "s3a"):  # one quick attempt: botocore's default retries take minutes on a dead endpoint
        timeout = {"connect_timeout": STORAGE_TIMEOUT_S / 2, "read_timeout": STORAGE_TIMEOUT_S / 2}
        options["config_kwargs"] = {**timeout, "retries": {"max_attempts": 1}}
    fs, path = url_to_fs(root, **options)
    bucket = path.strip("/").split("/", 1)[0]
    if bucket:
        fs.info(bucket)


def storage_error(exc: BaseException, root: str, *, checking: bool = True) -> StartupError | None:
    """The known mistakes among what opening the storage root raises, or None.

    ``checking``: ``exc`` came from the storage check alone, so a missing package, a refused access, a missing
    bucket or a dropped connection is the storage root's. Otherwise only errors that carry their origin count:
    an OSError on a path of the local root, or botocore's credentials and endpoint errors.
    """
    from fsspec.utils import get_protocol

    protocol = get_protocol(root)
    shown = root.split("@")[-1]
    name = type(exc).__name__
    if protocol in ("file", "local"):
        path = _local_root(root)
        if isinstance(exc, OSError) and concerns(exc, path):
            return caused(
                exc,
                Stage.STORAGE,
                f"cannot use STORAGE_ROOT {path}: {os_reason(exc)}",
                "point STORAGE_ROOT at a folder this user can create and write",
                Exit.STORAGE_LOCAL,
            )
        return None
    if name in ("NoCredentialsError", "PartialCredentialsError", "CredentialRetrievalError") or (
        checking and isinstance(exc, PermissionError)
    ):
        return caused(
            exc,
            Stage.STORAGE,
            f"the object store refused access to {shown}: {exc}",
            "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, a profile or a role with access to the bucket",
            Exit.STORAGE_CREDENTIALS,
        )
    if name in ("EndpointConnectionError", "ConnectTimeoutError") or (
        checking and isinstance(exc, ConnectionError | TimeoutError)
    ):
        return caused(
            exc,
            Stage.STORAGE,
            f"cannot reach the object store of {shown}: {exc}",
            "check AWS_ENDPOINT_URL (or FSSPEC_S3_ENDPOINT_URL) and that the store is up",
            Exit.STORAGE_UNREACHABLE,
        )
    if not checking:
        return None
    if isinstance(exc, FileNotFoundError):
        return caused(
            exc,
            Stage.STORAGE,
            f"the bucket of STORAGE_ROOT {shown} does not exist",
            "create it first; the worker does not create buckets",
            Exit.STORAGE_BUCKET,
        )
    if isinstance(exc, ImportError):
        extra = "pip install 'mindbus-storage[s3]'" if protocol in ("s3", "s3a") else "install the package it names"
        return caused(
            exc,
            Stage.STORAGE,
            f"STORAGE_ROOT {shown} needs a package that is not installed: {exc}",
            extra,
            Exit.STORAGE_SCHEME,
        )
    if isinstance(exc, ValueError) and "Protocol not known" in str(exc):
        return caused(
            exc,
            Stage.STORAGE,
            f"STORAGE_ROOT {shown}: no filesystem for {protocol}://",
            "use file:///path or s3://bucket/prefix",
            Exit.STORAGE_SCHEME,
        )
    return None
