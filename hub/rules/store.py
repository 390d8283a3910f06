"""The rule engine's state on disk: one JSON file, replaced atomically and fsync'd.

Written after every change that matters (a report, a timer firing), so a restart in the
middle of "not back in bed within 30 minutes" resumes the same deadline. A torn or corrupt
file is kept aside for inspection and the hub starts with empty rule state (it logs this):
better to lose a timer than to stop the hub from starting.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from hub.rules.engine import RuleEngine

log = logging.getLogger(__name__)


class RuleStateStore:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.saves = 0
        self._seq = 0
        self._written = 0

    def load_into(self, engine: RuleEngine) -> bool:
        try:
            snap = json.loads(self.path.read_text())
            engine.restore(snap)
        except FileNotFoundError:
            return False
        except (OSError, ValueError, TypeError, AttributeError) as e:
            aside = self.path.with_suffix(".corrupt")
            log.error("rule state %s unreadable (%s): kept as %s, starting fresh",
                      self.path, e, aside)
            try:
                os.replace(self.path, aside)
            except OSError:
                pass
            return False
        engine.changed = False
        return True

    def take(self, engine: RuleEngine) -> tuple[int, bytes] | None:
        """A numbered snapshot if the state changed, to `write` once its messages are durable."""
        if not engine.changed:
            return None
        engine.changed = False
        self._seq += 1
        return self._seq, json.dumps(engine.snapshot(), separators=(",", ":"),
                                     sort_keys=True).encode()

    def write(self, snap: tuple[int, bytes] | None) -> None:
        """Write a snapshot unless a newer one is already on disk. Never raises: the alarms
        are in the outbox; a lost state write at worst repeats a timer after a restart."""
        if snap is None or snap[0] <= self._written:
            return
        try:
            self._write(snap[1])
        except OSError as e:
            log.error("cannot save rule state to %s: %s", self.path, e)
            return
        self._written = snap[0]
        self.saves += 1

    def save(self, engine: RuleEngine) -> None:
        engine.changed = True
        self.write(self.take(engine))

    def _write(self, data: bytes) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, self.path)
        # The rename itself is durable only once the directory is synced.
        dfd = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
