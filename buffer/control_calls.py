"""``StorageClient.signal``: a CONTROL signal from an operator's program (a console, a deploy script).

Signals are not commands: nothing answers them and nothing is buffered. The nodes obey one only when its
AMQP ``user_id``, which the broker checks against the connection's login, is one of their admins; so the
signal always goes out as the broker user of ``AMQP_URL``, whatever ``STORAGE_CLIENT_USER_ID`` says.
"""

from __future__ import annotations

from buffer._core import ClientCore
from contracts import ControlData, ControlEnvelope, ControlScope, control_routing_key, topology


class ControlCalls(ClientCore):
    """CONTROL signals to storage nodes."""

    async def signal(
        self, scope: ControlScope | str, *, target: str = topology.NODE_TYPE, reason: str | None = None
    ) -> str:
        """Send ``ctl.<target>.<scope>`` (priority 255, confirmed by the broker); the routing key it went out with.

        ``target``: ``storage`` (every storage node, the default), ``all`` (every MindBus node) or a node name.
        Raises ``BrokerUnavailable`` when the broker cannot take it. Whether it is obeyed shows in the nodes'
        heartbeats (``status: paused``) and logs, never in an answer.
        """
        chosen = ControlScope(scope)
        if target not in ("all", topology.NODE_TYPE):
            topology.check_node_name(target)
        envelope = ControlEnvelope(source=self.settings.agent_id, data=ControlData(reason=reason))
        key = control_routing_key(target, chosen)
        await self.transport.send_signal(envelope, key)
        return key
