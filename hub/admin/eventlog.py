"""Local event log: what the hub stored to send (alarms, clears, events, status) and what it
did (reloads), for `tryggheim events [--follow]`. JSON lines with a retention limit.

Only message metadata and the fields the rules put in messages are kept: the same data
that leaves the home anyway, never raw sensor streams.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections import deque
from collections.abc import Iterable
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from hub.clock import iso
from hub.rules.outgoing import Outgoing


def parse_jsonl(lines: Iterable[str]) -> list[dict[str, Any]]:
    """Entries of a JSON-lines log, skipping a torn last line left by a power loss."""
    out = []
    for line in lines:
        try:
            out.append(json.loads(line))
        except ValueError:
            continue
    return out


class EventLog:
    def __init__(self, path: Path, tz: ZoneInfo, retention_days: int) -> None:
        self.path = path
        self.tz = tz
        self.retention_days = retention_days
        self._followers: set[asyncio.Queue[dict[str, Any]]] = set()
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def outgoing(self, out: Outgoing) -> None:
        p = out.payload
        entry = {k: v for k, v in p.items() if k not in ("schema", "site")}
        self.append(entry)

    def note(self, now: float, type_: str, **fields: Any) -> None:
        self.append({"kind": "hub", "type": type_, "time": iso(now, self.tz), **fields})

    def append(self, entry: dict[str, Any]) -> None:
        try:
            # Health data about a person at home: the hub's own user only.
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            with open(fd, "a", encoding="utf-8") as f:
                f.write(json.dumps(entry, ensure_ascii=False) + "\n")
        except OSError:
            pass  # the outbox holds what matters; a full disk must not stop the rules
        for q in list(self._followers):
            if q.qsize() < 1000:  # a stuck follower must not grow memory without bound
                q.put_nowait(entry)

    def tail(self, n: int) -> list[dict[str, Any]]:
        try:
            with open(self.path, encoding="utf-8") as f:
                lines = deque(f, maxlen=n)
        except FileNotFoundError:
            return []
        return parse_jsonl(lines)

    def follow(self) -> asyncio.Queue[dict[str, Any]]:
        q: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._followers.add(q)
        return q

    def unfollow(self, q: asyncio.Queue[dict[str, Any]]) -> None:
        self._followers.discard(q)

    def prune(self, now: float) -> int:
        """Drop entries older than the retention. Entries carry ISO times with offsets."""
        from datetime import datetime

        keep_from = now - self.retention_days * 86400
        try:
            lines = self.path.read_text(encoding="utf-8").splitlines(keepends=True)
        except FileNotFoundError:
            return 0
        kept = []
        for line in lines:
            try:
                t = datetime.fromisoformat(json.loads(line)["time"]).timestamp()
            except (ValueError, KeyError, TypeError):
                continue
            if t >= keep_from:
                kept.append(line)
        if len(kept) == len(lines):
            return 0
        tmp = self.path.with_suffix(".tmp")
        with open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w",
                  encoding="utf-8") as f:
            f.write("".join(kept))
        os.replace(tmp, self.path)
        return len(lines) - len(kept)
