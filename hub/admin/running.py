"""The running hub as the admin surfaces see it: the control socket's commands and reload
(server.py), the walk test (watch.py) and systemd's watchdog (sdnotify.py).

hub/service.py's `Hub` has all of this; the admin depends on this interface, not on the
service, so that imports run one way: the service wires the admin in, never the reverse.
Reload replaces `cfg`, `rules` and `decoder` (plain assignments, all or nothing).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from hub.clock import Clock
from hub.config.settings import HubConfig
from hub.decode.counters import CounterStore
from hub.decode.decoder import AdvertDecoder, Report
from hub.delivery.home_assistant import HomeAssistant
from hub.delivery.mqtt_link import DeliveredCallback, MqttLink
from hub.delivery.outbox import Outbox
from hub.radio.scanner import Scanner
from hub.rules.engine import RuleEngine
from hub.rules.outgoing import Outgoing


class RunningHub(Protocol):
    cfg: HubConfig
    clock: Clock
    rules: RuleEngine
    decoder: AdvertDecoder
    counters: CounterStore
    scanner: Scanner
    outbox: Outbox
    link: MqttLink
    home_assistant: HomeAssistant | None
    on_stored: list[Callable[[Outgoing], None]]  # each message once it is durable
    on_delivered: list[DeliveredCallback]  # each message the response centre receipted
    on_report: list[Callable[[Report], None]]  # each accepted report, after the rules

    def status(self) -> dict[str, Any]:
        """The heartbeat's content: outbox depth, devices, radio."""
        ...

    def _dispatch(self, outs: list[Outgoing]) -> None:
        """Commit one decision (messages and the state they imply), then send."""
        ...

    async def emit(self, out: Outgoing) -> None:
        """Store one message; returns once it is durable and acknowledged."""
        ...
