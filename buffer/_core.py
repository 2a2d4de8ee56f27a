"""The engine under ``StorageClient``: one call's attempts, retries, spilling and the replay heartbeat.

Exactly-once across retries and replays rests on two ids the worker's inbox deduplicates on. Each attempt
is a new envelope (new ``id``, fresh ``time``, AMQP ``expiration`` = the call timeout, so a copy that
waited too long in the queue is refused instead of executed late) carrying the same ``idempotency_key``:
a retry after a lost reply gets the stored reply, not a second effect. A spilled envelope is replayed as
is, with its id and key and without ``expiration``. A spilled ``register_artifact`` whose file the client
can read on its storage root keeps a copy of the bytes in the buffer (``buffer.restage``), so the replay
still finds the file after the worker's cleanup moved the staged one away.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from typing import Any, Protocol, TypeVar

from pydantic import BaseModel, ValidationError

from buffer.errors import SpillFailed
from buffer.live import Subscription
from buffer.outcomes import Buffered, CallOptions
from buffer.replay import Progress, Replayer, ReplayReport
from buffer.restage import StorageFiles
from buffer.retry import RetryPolicy, Sleep, is_retryable_error
from buffer.rpc import Reply, RpcTransport
from buffer.settings import ClientSettings
from buffer.spill import BufferStatus, Entry, SpillBuffer
from contracts import (
    ACTIONS,
    ActionSpec,
    CommandEnvelope,
    ControlEnvelope,
    ErrorEnvelope,
    InternalError,
    InvalidArgument,
    Output,
    Params,
    StorageError,
    Unavailable,
    make_command,
    new_id,
)

log = logging.getLogger(__name__)

_OPTION_NAMES = CallOptions.__required_keys__ | CallOptions.__optional_keys__
OutputT = TypeVar("OutputT", bound=Output)
ModelT = TypeVar("ModelT", bound=BaseModel)


class Transport(Protocol):
    late_replies: int

    async def call(
        self, envelope: CommandEnvelope, *, routing_key: str, timeout_s: float, expire: bool = True
    ) -> Reply: ...

    async def close(self) -> None: ...

    async def subscribe(self, routing_keys: Sequence[str]) -> Subscription: ...

    async def send_signal(self, envelope: ControlEnvelope, routing_key: str) -> None: ...


TransportFactory = Callable[[ClientSettings, Callable[[str], None]], Transport]


def _amqp_transport(settings: ClientSettings, on_event: Callable[[str], None]) -> Transport:
    return RpcTransport(
        settings.amqp_url,
        settings.exchange,
        connect_timeout_s=settings.connect_timeout_s,
        on_event=on_event,
        user_id=settings.broker_user_id(),
    )


class ClientCore:
    def __init__(
        self,
        settings: ClientSettings | None = None,
        *,
        trace_id: str | None = None,
        context: dict[str, Any] | None = None,
        retry: RetryPolicy | None = None,
        transport: TransportFactory | None = None,
        sleep: Sleep | None = None,
        **overrides: Any,
    ) -> None:
        if settings is None:
            self.settings = ClientSettings(**overrides)
        else:
            self.settings = ClientSettings.model_validate({**settings.model_dump(), **overrides})
        self.trace_id = trace_id
        self.context = dict(context or {})
        if trace_id is not None:
            self.context.setdefault("requester_trace_id", trace_id)
        self.retry = retry or self.settings.retry_policy()
        self._sleep = sleep
        self._transport_factory = transport or _amqp_transport
        self._transport: Transport | None = None
        self.buffer = SpillBuffer(
            self.settings.buffer_dir, max_items=self.settings.buffer_max_items, max_bytes=self.settings.buffer_max_bytes
        )
        self.files = StorageFiles(self.settings.storage_root)
        self._replayer = Replayer(self.buffer, self._send_replay, self.files, user_id=self.settings.broker_user_id())
        self._replay_lock = asyncio.Lock()
        self._wake = asyncio.Event()
        self._heartbeat_task: asyncio.Task[None] | None = None
        self._down_until = 0.0
        self._outage = False
        """The last delivery attempt found the service down and no storage node has announced itself since."""
        self.last_replay: ReplayReport | None = None
        self.on_replay: list[Callable[[ReplayReport], None]] = []
        """Observers of every replay pass (the heartbeat's too): for an agent's logs or metrics."""

    # -- life cycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        """Open the buffer (quarantining bad files) and start replaying: now, then every heartbeat."""
        await asyncio.to_thread(self.buffer.open)
        self._transport = self._transport_factory(self.settings, self._on_worker_event)
        self._heartbeat_task = asyncio.create_task(self._heartbeat(), name="storage-buffer-heartbeat")

    async def close(self) -> None:
        if self._heartbeat_task is not None:
            self._heartbeat_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._heartbeat_task
            self._heartbeat_task = None
        if self._transport is not None:
            await self._transport.close()
            self._transport = None

    @property
    def transport(self) -> Transport:
        if self._transport is None:
            raise RuntimeError("the storage client is not started: use `async with StorageClient(...)`")
        return self._transport

    def _on_worker_event(self, routing_key: str) -> None:
        """A storage node registered or beat: if commands wait, replay now rather than at the next tick."""
        self._down_until = 0.0
        self._outage = False
        self._wake.set()

    async def _heartbeat(self) -> None:
        while True:
            try:
                if await asyncio.to_thread(self.buffer.has_pending):
                    await self.replay(probe=self._outage)
            except Exception:
                log.exception("buffer replay failed; retrying at the next heartbeat")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.settings.heartbeat_s)
            self._wake.clear()

    # -- replay --------------------------------------------------------------------------------

    async def replay(self, *, progress: Progress | None = None, probe: bool = False) -> ReplayReport:
        """One pass over the buffer now (the heartbeat does this by itself).

        With ``probe`` a ping (with an expiration) goes first and the pass is skipped when it gets no answer:
        a replayed command carries no expiration, so sending one into a queue nobody consumes would leave a
        copy there on every heartbeat of a long outage.
        """
        async with self._replay_lock:
            stopped = await self._probe() if probe else None
            if stopped is not None:
                remaining = len(await asyncio.to_thread(self.buffer.entries))
                report = ReplayReport(remaining=remaining, stopped=stopped)
            else:
                report = await self._replayer.run(progress=progress)
        self.last_replay = report
        for observer in self.on_replay:
            observer(report)
        if report.stopped is not None:
            self._mark_down()
        elif report.complete:
            self._down_until = 0.0
            self._outage = False
        return report

    async def _probe(self) -> StorageError | None:
        """None when a storage node answers a ping now, else why not."""
        ping = make_command("ping", {}, source=self.settings.agent_id, context=self.context or None)
        try:
            await self.transport.call(
                ping, routing_key=self.settings.routing_key(), timeout_s=self.settings.call_timeout_s, expire=True
            )
        except StorageError as exc:
            return exc
        return None

    async def _send_replay(self, envelope: CommandEnvelope) -> Reply:
        context = envelope.data.context or {}
        node = envelope.data.target_node or context.get("target_node")
        return await self.transport.call(
            envelope, routing_key=self.settings.routing_key(node), timeout_s=self.settings.call_timeout_s, expire=False
        )

    async def status(self) -> BufferStatus:
        return await asyncio.to_thread(self.buffer.status)

    def _mark_down(self) -> None:
        self._down_until = asyncio.get_running_loop().time() + self.settings.heartbeat_s
        self._outage = True

    def _known_down(self) -> bool:
        return asyncio.get_running_loop().time() < self._down_until

    # -- calls ---------------------------------------------------------------------------------

    async def call(
        self, action: str, params: Params | dict[str, Any] | None = None, **options: Any
    ) -> Output | Buffered:
        """Any action by name; the typed methods are thin wrappers around this."""
        spec = ACTIONS.get(action)
        if spec is None:
            raise InvalidArgument(f"unknown action {action!r}", {"action": action, "supported": sorted(ACTIONS)})
        return await self._run(spec, _params(spec, params), CallOptions(**options))  # type: ignore[typeddict-item]

    async def _read(self, action: str, params: Params, options: CallOptions, output: type[OutputT]) -> OutputT:
        """A call whose failure raises (reads, and the admin writes an operator wants to see happen)."""
        result = await self._run(ACTIONS[action], params, options)
        if not isinstance(result, output):
            raise InternalError(f"{action} gave {type(result).__name__}, expected {output.__name__}")
        return result

    async def _write(
        self, action: str, params: Params, options: CallOptions, output: type[OutputT]
    ) -> OutputT | Buffered:
        """A write the buffer may keep: its output, or ``Buffered`` when the worker stayed out of reach."""
        result = await self._run(ACTIONS[action], params, options)
        if not isinstance(result, output | Buffered):
            raise InternalError(f"{action} gave {type(result).__name__}, expected {output.__name__}")
        return result

    async def _run(self, spec: ActionSpec, params: Params, options: CallOptions) -> Output | Buffered:
        if unknown := set(options) - _OPTION_NAMES:
            raise TypeError(
                f"{spec.name}() got unknown option(s) {sorted(unknown)}; options are {sorted(_OPTION_NAMES)}"
            )
        timeout_s = options.get("timeout_s", self.settings.call_timeout_s)
        routing_key = self.settings.routing_key(options.get("target_node"))
        key = options.get("idempotency_key") or (new_id() if spec.writes else None)
        wire_params = wire_form(params)

        def envelope() -> CommandEnvelope:
            return make_command(
                spec.name,
                wire_params,
                source=self.settings.agent_id,
                context={**self.context, **options.get("context", {})} or None,
                idempotency_key=key,
                target_node=options.get("target_node"),
            )

        if spec.spillable and self.settings.keep_order and await self._must_queue_behind():
            waiting = Unavailable("earlier commands are still waiting in the buffer", {"reason": "keep_order"})
            return await self._spill(spec, envelope(), waiting)

        sent: list[CommandEnvelope] = []

        async def attempt() -> Output:
            command = envelope()
            sent.append(command)
            reply = await self.transport.call(command, routing_key=routing_key, timeout_s=timeout_s, expire=True)
            return _output(spec, reply)

        try:
            return await self.retry.run(attempt, sleep=self._sleep, label=spec.name)
        except StorageError as exc:
            if not (spec.spillable and is_retryable_error(exc)):
                raise
            self._mark_down()
            return await self._spill(spec, sent[-1] if sent else envelope(), exc)

    async def _must_queue_behind(self) -> bool:
        """True when older commands wait in the buffer and cannot be sent first (worker down, other replayer)."""
        if not await asyncio.to_thread(self.buffer.has_pending):
            return False
        if self._known_down():
            return True
        report = await self.replay()
        return report.remaining > report.skipped

    async def _spill(self, spec: ActionSpec, envelope: CommandEnvelope, error: StorageError) -> Buffered:
        reason = f"{error.code.value}: {error.message}"

        def spill() -> Entry:
            return self.buffer.spill(
                envelope, reason, self.files.file_copy(envelope), user_id=self.settings.broker_user_id()
            )

        try:
            entry = await asyncio.to_thread(spill)
        except SpillFailed as exc:
            raise exc from error
        assert envelope.data.idempotency_key is not None
        log.warning("%s %s buffered in %s: %s", spec.name, envelope.id, entry.path.parent, error.message)
        return Buffered(
            spec.name, envelope.id, envelope.data.idempotency_key, envelope.data.params, entry.path, error, entry.blob
        )


def _params(spec: ActionSpec, params: Params | dict[str, Any] | None) -> Params:
    if isinstance(params, spec.params):
        return params
    if isinstance(params, BaseModel):
        params = params.model_dump()
    return validated(spec.params, params or {})


def wire_form(params: Params) -> dict[str, Any]:
    """The params as sent: a field left unset stays off the wire (the contract's default applies), but one set
    to None on purpose goes as ``null`` (``save_thread``'s ``max_messages: null`` forgets the setting)."""
    wire = params.model_dump(mode="json", exclude_none=True)
    for name in params.model_fields_set:
        if getattr(params, name) is None:
            wire[name] = None
    return wire


def validated(model: type[ModelT], values: dict[str, Any]) -> ModelT:
    """Build a params model, refusing bad input here, before anything is sent (same shape as the worker's)."""
    try:
        return model.model_validate(values)
    except ValidationError as exc:
        errors = [
            {"field": ".".join(str(p) for p in e["loc"]) or "(params)", "message": e["msg"], "type": e["type"]}
            for e in exc.errors(include_url=False, include_input=False)[:20]
        ]
        first = errors[0]
        raise InvalidArgument(f"invalid params: {first['field']}: {first['message']}", {"errors": errors}) from None


def _output(spec: ActionSpec, reply: Reply) -> Output:
    if isinstance(reply, ErrorEnvelope):
        error = reply.data.error
        raise StorageError.from_wire(error.code, error.message, error.details, error.retryable)
    try:
        return spec.output.model_validate(reply.data.output)
    except ValidationError as exc:
        raise InternalError(
            f"the worker's {spec.name} output does not match the contract", {"error": str(exc)[:500]}
        ) from None
