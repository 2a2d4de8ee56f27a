"""``SyncStorageClient``: the same API for agents without an event loop.

A private event loop runs in a daemon thread and owns one ``StorageClient``; each method hands its
coroutine to that loop and blocks for the result. Any number of the agent's threads may call at once;
their calls are in flight together on the one connection. Arguments are those of ``StorageClient``.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Coroutine, Iterator
from types import TracebackType
from typing import Any, Self, TypeVar

from buffer.client import StorageClient
from buffer.outcomes import Buffered
from buffer.replay import ReplayReport
from buffer.spill import BufferStatus
from buffer.watching import ChangeWatch
from contracts import (
    ArtifactManifest,
    Change,
    ChangesSinceOutput,
    CleanupOutput,
    DeleteArtifactOutput,
    DeleteMemoryOutput,
    DeleteThreadOutput,
    GetArtifactOutput,
    GetArtifactUriOutput,
    GetLineageOutput,
    GetStatsOutput,
    GetThreadInfoOutput,
    GetThreadOutput,
    ListArtifactsOutput,
    ListNamespacesOutput,
    ListThreadsOutput,
    MemoryItem,
    Output,
    PingOutput,
    PutMemoryOutput,
    RegisterArtifactOutput,
    RestoreArtifactOutput,
    RestoreThreadOutput,
    SaveThreadOutput,
    SearchMemoryOutput,
    ThreadInfo,
)

T = TypeVar("T")


class SyncStorageClient:
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._args, self._kwargs = args, kwargs
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._client: StorageClient | None = None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def start(self) -> None:
        if self._loop is not None:
            return
        loop = asyncio.new_event_loop()
        thread = threading.Thread(target=loop.run_forever, name="storage-client-loop", daemon=True)
        thread.start()
        self._loop, self._thread = loop, thread

        async def open_client() -> StorageClient:
            client = StorageClient(*self._args, **self._kwargs)
            await client.start()
            return client

        try:
            self._client = self._run(open_client())
        except BaseException:
            self._stop_loop()
            raise

    def close(self) -> None:
        if self._loop is None:
            return
        try:
            if self._client is not None:
                self._run(self._client.close())
        finally:
            self._client = None
            self._stop_loop()

    def _stop_loop(self) -> None:
        loop, thread = self._loop, self._thread
        self._loop = self._thread = None
        if loop is None or thread is None:
            return
        loop.call_soon_threadsafe(loop.stop)
        thread.join()
        loop.close()

    @property
    def client(self) -> StorageClient:
        """The async client inside (its ``settings``, ``buffer`` and counters are safe to read)."""
        if self._client is None:
            raise RuntimeError("the storage client is not started: use `with SyncStorageClient(...)`")
        return self._client

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        if self._loop is None:
            coro.close()
            raise RuntimeError("the storage client is not started: use `with SyncStorageClient(...)`")
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    def _iterate(self, source: AsyncIterator[T]) -> Iterator[T]:
        async def step() -> tuple[bool, T | None]:
            try:
                return True, await source.__anext__()
            except StopAsyncIteration:
                return False, None

        async def close() -> None:
            await source.aclose()  # type: ignore[attr-defined]

        try:
            while True:
                more, value = self._run(step())
                if not more:
                    return
                yield value  # type: ignore[misc]
        finally:
            if self._loop is not None:
                self._run(close())

    # -- the API -------------------------------------------------------------------------------

    def call(self, action: str, params: Any = None, **options: Any) -> Output | Buffered:
        return self._run(self.client.call(action, params, **options))

    def register_artifact(self, manifest: Any, **options: Any) -> RegisterArtifactOutput | Buffered:
        return self._run(self.client.register_artifact(manifest, **options))

    def upload_artifact(self, data: Any, **kwargs: Any) -> RegisterArtifactOutput | Buffered:
        return self._run(self.client.upload_artifact(data, **kwargs))

    def get_artifact(self, artifact_id: str, **kwargs: Any) -> GetArtifactOutput:
        return self._run(self.client.get_artifact(artifact_id, **kwargs))

    def list_artifacts(self, **kwargs: Any) -> ListArtifactsOutput:
        return self._run(self.client.list_artifacts(**kwargs))

    def iter_artifacts(self, **kwargs: Any) -> Iterator[ArtifactManifest]:
        return self._iterate(self.client.iter_artifacts(**kwargs))

    def get_artifact_uri(self, artifact_id: str, **kwargs: Any) -> GetArtifactUriOutput:
        return self._run(self.client.get_artifact_uri(artifact_id, **kwargs))

    def get_lineage(self, artifact_id: str, **kwargs: Any) -> GetLineageOutput:
        return self._run(self.client.get_lineage(artifact_id, **kwargs))

    def delete_artifact(self, artifact_id: str, **options: Any) -> DeleteArtifactOutput:
        return self._run(self.client.delete_artifact(artifact_id, **options))

    def restore_artifact(self, artifact_id: str, **options: Any) -> RestoreArtifactOutput:
        return self._run(self.client.restore_artifact(artifact_id, **options))

    def save_thread(self, thread_id: str, messages: Any = (), **kwargs: Any) -> SaveThreadOutput | Buffered:
        return self._run(self.client.save_thread(thread_id, messages, **kwargs))

    def get_thread(self, thread_id: str, **kwargs: Any) -> GetThreadOutput:
        return self._run(self.client.get_thread(thread_id, **kwargs))

    def list_threads(self, **kwargs: Any) -> ListThreadsOutput:
        return self._run(self.client.list_threads(**kwargs))

    def iter_threads(self, **kwargs: Any) -> Iterator[ThreadInfo]:
        return self._iterate(self.client.iter_threads(**kwargs))

    def delete_thread(self, thread_id: str, **options: Any) -> DeleteThreadOutput | Buffered:
        return self._run(self.client.delete_thread(thread_id, **options))

    def get_thread_info(self, thread_id: str, **kwargs: Any) -> GetThreadInfoOutput:
        return self._run(self.client.get_thread_info(thread_id, **kwargs))

    def restore_thread(self, thread_id: str, **kwargs: Any) -> RestoreThreadOutput:
        return self._run(self.client.restore_thread(thread_id, **kwargs))

    def put_memory(self, namespace: Any, key: str, value: dict[str, Any], **kwargs: Any) -> PutMemoryOutput | Buffered:
        return self._run(self.client.put_memory(namespace, key, value, **kwargs))

    def get_memory(self, namespace: Any, key: str, **kwargs: Any) -> MemoryItem:
        return self._run(self.client.get_memory(namespace, key, **kwargs))

    def search_memory(self, **kwargs: Any) -> SearchMemoryOutput:
        return self._run(self.client.search_memory(**kwargs))

    def iter_memory(self, **kwargs: Any) -> Iterator[MemoryItem]:
        return self._iterate(self.client.iter_memory(**kwargs))

    def list_namespaces(self, **kwargs: Any) -> ListNamespacesOutput:
        return self._run(self.client.list_namespaces(**kwargs))

    def delete_memory(self, namespace: Any, key: str, **options: Any) -> DeleteMemoryOutput | Buffered:
        return self._run(self.client.delete_memory(namespace, key, **options))

    def cleanup(self, **kwargs: Any) -> CleanupOutput:
        return self._run(self.client.cleanup(**kwargs))

    def get_stats(self, **options: Any) -> GetStatsOutput:
        return self._run(self.client.get_stats(**options))

    def ping(self, **options: Any) -> PingOutput:
        return self._run(self.client.ping(**options))

    def changes_since(self, cursor: Any = None, **kwargs: Any) -> ChangesSinceOutput:
        return self._run(self.client.changes_since(cursor, **kwargs))

    def watch(self, **kwargs: Any) -> Iterator[Change]:
        """``StorageClient.watch`` as a generator: blocks for each change; its queue goes when the loop ends
        (``break``, or closing the generator)."""

        async def opened() -> ChangeWatch:
            return await self.client.watch(**kwargs).start()

        return self._iterate(self._run(opened()))

    def wait_for_artifact(self, filter: Any = None, *, timeout_s: float, **filters: Any) -> ArtifactManifest:
        return self._run(self.client.wait_for_artifact(filter, timeout_s=timeout_s, **filters))

    def replay(self) -> ReplayReport:
        return self._run(self.client.replay())

    def status(self) -> BufferStatus:
        return self._run(self.client.status())
