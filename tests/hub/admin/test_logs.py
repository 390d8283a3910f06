"""Audit log and local event log: who is recorded, diffs, retention limits."""

from __future__ import annotations

import os
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

from hub.admin.audit import AuditLog, Who, diff, read_sources
from hub.admin.control import is_admin
from hub.admin.eventlog import EventLog
from hub.rules.outgoing import Outgoing

OSLO = ZoneInfo("Europe/Oslo")
DAY = 86400.0


def test_who_names_the_ssh_user_through_sudo_and_flags_false_claims() -> None:
    assert Who(0, "root", "kari").name == "kari (via sudo)"
    assert Who(0, "root", None).name == "root"
    assert Who(1001, "kari", "kari").name == "kari"
    # Not root: the claim cannot change who the kernel says connected.
    assert Who(1001, "kari", "ola").name == "kari (claims ola)"


def test_audit_records_are_durable_lines_and_pruned_after_retention(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "audit.jsonl", OSLO, retention_days=30)
    t0 = 1_790_000_000.0
    log.record(t0, Who(0, "root", "kari"), "reload", "applied", diff="+x\n")
    log.record(t0 + 40 * DAY, Who(0, "root", "ola"), "mute", "applied", minutes=30)
    assert [e["who"] for e in log.entries()] == ["kari (via sudo)", "ola (via sudo)"]
    assert oct(os.stat(log.path).st_mode & 0o777) == "0o640"
    assert log.prune(t0 + 41 * DAY) == 1
    assert [e["action"] for e in log.entries()] == ["mute"]
    # A torn last line (power loss mid-write) does not hide the others.
    with open(log.path, "a") as f:
        f.write('{"time": "2026-')
    assert len(log.entries()) == 1


def test_config_diff_names_files_and_lines(tmp_path: Path) -> None:
    (tmp_path / "rules.toml").write_text('[[bed_exit]]\nbed = "bed-1"\nreturn_min = 30\n')
    before = read_sources((tmp_path / "rules.toml",))
    (tmp_path / "rules.toml").write_text('[[bed_exit]]\nbed = "bed-1"\nreturn_min = 45\n')
    d = diff(before, read_sources((tmp_path / "rules.toml",)))
    assert "--- a/rules.toml\n+++ b/rules.toml\n" in d
    assert "-return_min = 30\n+return_min = 45\n" in d
    assert diff(before, before) == ""


def test_event_log_tail_and_retention(tmp_path: Path) -> None:
    log = EventLog(tmp_path / "events.jsonl", OSLO, retention_days=7)
    for day, type_ in ((1, "old"), (10, "recent")):
        log.outgoing(Outgoing("event", "d", 5, {
            "schema": 1, "kind": "event", "id": type_, "site": "s", "device": "d",
            "type": type_, "priority": 5, "time": f"2026-11-{day:02d}T12:00:00+01:00"}))
    assert [e["type"] for e in log.tail(10)] == ["old", "recent"]
    assert "site" not in log.tail(1)[0]
    now = datetime(2026, 11, 12, 12, 0, tzinfo=OSLO).timestamp()
    assert log.prune(now) == 1
    assert [e["type"] for e in log.tail(10)] == ["recent"]


def test_is_admin_root_and_self_always_others_only_in_the_group() -> None:
    assert is_admin(0, 0, "no-such-group-tg")
    assert is_admin(os.getuid(), os.getgid(), "no-such-group-tg")
    assert not is_admin(65534, 65534, "no-such-group-tg")
