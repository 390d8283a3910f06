"""Alarm routing: which messages go to which receiver (response centre, relatives, ...).

Privacy by default: only alarms (care and technical, with their clears) and status leave the
home, to the response centre on the standard topics. Events (charging notices and the like)
stay in the local event log unless a route sends them somewhere. Routes named "centre"
replace that default selection for the response centre. Every other receiver gets a copy, on
its own topic and with its own message id (`<id>:<receiver>`, the alarm id unchanged), only
of what its route selects.

Each receiver has its own delivery window and rule (hub/delivery/mqtt_link.py): a route with
`confirms = true` keeps its copies until that receiver's own receipt names them (on
`tryggheim/v1/<site>/to/<receiver>/receipt`); otherwise a copy is done at the broker's
PUBACK. Either way a receiver never holds back the response centre or another receiver.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Any

from hub.config.tomlcheck import Reader
from hub.rules.outgoing import Outgoing
from protocols import mqtt_schema

CENTRE = "centre"
DEFAULT_CENTRE_KINDS = frozenset({"alarm", "alarm_cleared", "technical_alarm", "status"})


@dataclass(frozen=True)
class Route:
    receiver: str
    kinds: frozenset[str] = frozenset()  # empty = every kind
    types: frozenset[str] = frozenset()  # empty = every type
    max_priority: int = 9  # only as urgent as this or more (1 = most urgent)
    confirms: bool = False  # the receiver sends receipts: keep its copies until they come
    receipt_key_file: str = ""  # its receipt key (relative to the config file)

    def matches(self, out: Outgoing) -> bool:
        return ((not self.kinds or out.kind in self.kinds)
                and (not self.types or str(out.payload.get("type")) in self.types)
                and out.priority <= self.max_priority)


def receiver_topic(site: str, receiver: str, kind: str) -> str:
    if receiver == CENTRE:
        return str(mqtt_schema.topic(site, kind))
    return f"{mqtt_schema.TOPIC_ROOT}/{site}/to/{receiver}/{kind}"


def receiver_of(topic: str) -> str:
    """Whose copy a topic carries: CENTRE, or the receiver of a `.../to/<receiver>/...`."""
    parts = topic.split("/")
    if len(parts) > 4 and parts[3] == "to":
        return parts[4]
    return CENTRE


def copy_id(msg_id: str, receiver: str) -> str:
    # ":" is allowed in message ids by the schemas ("@" is not) and never used by the hub's
    # own ids, so a copy's id cannot collide with another message's.
    return f"{msg_id}:{receiver}"


def route(site: str, routes: Iterable[Route], out: Outgoing) -> list[tuple[str, Outgoing]]:
    """(topic, message) for every receiver that gets `out`."""
    routes = list(routes)
    result: list[tuple[str, Outgoing]] = []
    centre = [r for r in routes if r.receiver == CENTRE] or [Route(CENTRE, DEFAULT_CENTRE_KINDS)]
    if any(r.matches(out) for r in centre):
        result.append((receiver_topic(site, CENTRE, out.kind), out))
    seen: set[str] = set()
    for r in routes:
        if r.receiver == CENTRE or r.receiver in seen or not r.matches(out):
            continue
        seen.add(r.receiver)
        payload = {**out.payload, "id": copy_id(out.msg_id, r.receiver), "receiver": r.receiver}
        result.append((receiver_topic(site, r.receiver, out.kind), replace(out, payload=payload)))
    return result


def parse_routes(tables: list[dict[str, Any]], r: Reader, prefix: str = "route") -> tuple[Route, ...]:
    kinds_ok = set(mqtt_schema.KINDS) - {"hub"}
    routes: list[Route] = []
    for i, t in enumerate(tables):
        where = f"{prefix}[{i}]"
        r.unknown(t, where, {"receiver", "kinds", "types", "max_priority", "confirms",
                             "receipt_key_file"})
        name = r.get(t, where, "receiver", str)
        if name is not None and not (name.replace("-", "").replace("_", "").isalnum()
                                     and name.isascii()):
            r.error(f"{where}.receiver", f"{name!r}: use letters, digits, - and _ (it is part"
                    " of the MQTT topic)")
            name = None
        kinds = r.get(t, where, "kinds", list, [])
        for j, k in enumerate(kinds):
            if k not in kinds_ok:
                r.error(f"{where}.kinds[{j}]", f"{k!r} is not one of {', '.join(sorted(kinds_ok))}")
        types = r.get(t, where, "types", list, [])
        for j, ty in enumerate(types):
            if not isinstance(ty, str):
                r.error(f"{where}.types[{j}]", "expected a message type name")
        prio = r.number(t, where, "max_priority", 9, 1, 9)
        confirms = r.get(t, where, "confirms", bool, False)
        key = r.get(t, where, "receipt_key_file", str, "")
        if name == CENTRE and ("confirms" in t or key):
            r.error(f"{where}.confirms", "the response centre always confirms; its key is"
                    " mqtt.receipt_key_file")
        if name not in (None, CENTRE) and confirms is True and not key:
            # Its receipts would otherwise be taken from anyone allowed on its topic.
            r.error(f"{where}.receipt_key_file", "a receiver that confirms signs its receipts:"
                    " name its key file (32 random bytes in hex, mode 0600; docs/DELIVERY.md)")
        if name is not None and len(name) > 64:
            r.error(f"{where}.receiver", "at most 64 characters")
        if name is not None:
            routes.append(Route(name, frozenset(map(str, kinds)), frozenset(map(str, types)),
                                prio, bool(confirms), key))
    return tuple(routes)
