"""What the rules hand to the outbox: one message, already in the published envelope."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Outgoing:
    kind: str
    device: str | None
    priority: int
    payload: dict[str, Any]

    @property
    def msg_id(self) -> str:
        return str(self.payload["id"])


def new_id() -> str:
    return uuid.uuid4().hex
