"""Audit log of admin changes: who, when, what changed (a diff). Local, append-only, fsync'd.

One JSON object per line in <data_dir>/audit.jsonl. Entries older than the retention are
pruned (retention.toml audit_days); everything else is kept, including rejected changes,
because "who tried to change the rules at 03:00" is a question worth answering.
"""

from __future__ import annotations

import difflib
import json
import os
import pwd
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from hub.admin.eventlog import parse_jsonl
from hub.clock import iso


@dataclass(frozen=True)
class Who:
    """An admin as the control socket saw them. `uid` is from the kernel (SO_PEERCRED);
    `claimed` is what the CLI said (SUDO_USER or USER), trusted only from root."""

    uid: int | None
    user: str  # the account behind uid
    claimed: str | None = None
    via: str = "control socket"  # or "SIGHUP"

    @property
    def name(self) -> str:
        if self.uid == 0 and self.claimed and self.claimed != "root":
            return f"{self.claimed} (via sudo)"
        if self.claimed and self.claimed != self.user:
            return f"{self.user} (claims {self.claimed})"
        return self.user

    @staticmethod
    def from_peer(uid: int, claimed: str | None) -> Who:
        return Who(uid, user_name(uid), claimed or None)


def user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid {uid}"


def read_sources(files: tuple[Path, ...]) -> dict[str, str]:
    """The text of each config file, by name, to diff against after a change."""
    out: dict[str, str] = {}
    for f in files:
        try:
            out[f.name] = f.read_text()
        except OSError:
            out[f.name] = ""
    return out


def diff(old: Mapping[str, str], new: Mapping[str, str]) -> str:
    parts: list[str] = []
    for name in sorted(set(old) | set(new)):
        a, b = old.get(name, ""), new.get(name, "")
        if a != b:
            parts += difflib.unified_diff(a.splitlines(keepends=True), b.splitlines(keepends=True),
                                          f"a/{name}", f"b/{name}")
    return "".join(p if p.endswith("\n") else p + "\n" for p in parts)


class AuditLog:
    def __init__(self, path: Path, tz: ZoneInfo, retention_days: int) -> None:
        self.path = path
        self.tz = tz
        self.retention_days = retention_days

    def record(self, now: float, who: Who, action: str, result: str,
               **detail: Any) -> dict[str, Any]:
        entry = {"time": iso(now, self.tz), "ts": now, "who": who.name, "uid": who.uid,
                 "via": who.via, "action": action, "result": result, **detail}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
        try:
            os.write(fd, (json.dumps(entry, ensure_ascii=False) + "\n").encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        return entry

    def entries(self) -> list[dict[str, Any]]:
        try:
            lines = self.path.read_text().splitlines()
        except FileNotFoundError:
            return []
        return parse_jsonl(lines)

    def prune(self, now: float) -> int:
        keep_from = now - self.retention_days * 86400
        entries = self.entries()
        kept = [e for e in entries if float(e.get("ts", now)) >= keep_from]
        if len(kept) == len(entries):
            return 0
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text("".join(json.dumps(e, ensure_ascii=False) + "\n" for e in kept))
        os.chmod(tmp, 0o640)
        os.replace(tmp, self.path)
        return len(entries) - len(kept)

