"""Randomised faults against the real hub process and a real Mosquitto: nothing acknowledged
is ever lost.

Each trial raises a burst of alarms and, at a random point in it, does one of: restart the
broker (SIGTERM), crash it (SIGKILL, its persistence saved only at exit), hang it (SIGSTOP),
crash the hub (SIGKILL), restart the response centre, or nothing. An alarm counts as sent
once the hub said it was stored (the moment it may acknowledge to the resident's device).
At the end every sent alarm must be at the response centre. Quick version in the default
run; `make soak` runs 1,000 trials (`-m slow`). CHAOS_TRIALS / CHAOS_SEED override.
"""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

import pytest

from tests.conftest import requires_mosquitto
from tests.test_delivery import HubProcess
from tests.test_delivery_support import open_for_broker, wait_sync, write_config
from tools.mosquitto import Mosquitto
from tools.response_centre import ResponseCentre

pytestmark = requires_mosquitto

FAULTS = ("broker_restart", "broker_kill", "broker_hang", "hub_kill", "centre_restart", "none")


class Chaos:
    def __init__(self, workdir: Path, seed: int) -> None:
        open_for_broker(workdir)
        self.dir = workdir
        self.rng = random.Random(seed)
        # Persistence only at a clean exit: a broker SIGKILL loses what it acknowledged.
        self.broker = Mosquitto(workdir / "broker", autosave_interval=3600).start()
        self.journal = workdir / "centre.jsonl"
        self.duplicates = 0
        self.centre = self._centre()
        self.cfg = write_config(workdir, self.broker.port, keepalive=2, window=8)
        self.hub = HubProcess(self.cfg, workdir / "hub.log")
        self.sent: set[str] = set()
        self.faults: dict[str, int] = {f: 0 for f in FAULTS}

    def _centre(self) -> ResponseCentre:
        return ResponseCentre("127.0.0.1", self.broker.port, client_id="chaos-centre",
                              journal=self.journal).start()

    def trial(self, t: int) -> None:
        n = self.rng.randint(1, 25)
        at = self.rng.randint(0, n)  # how many are stored before the fault strikes
        fault = self.rng.choice(FAULTS)
        self.faults[fault] += 1
        prefix = f"t{t}_"
        self.hub.send(f"burst {prefix} {n}")
        self._stored(prefix, at)
        if fault == "hub_kill":
            self.hub.kill()  # the rest of this burst may or may not have been stored
            self._count(prefix)
            self.hub = HubProcess(self.cfg, self.dir / "hub.log")
            return
        if fault == "broker_restart":
            self.broker.stop()
            self.broker.start()
        elif fault == "broker_kill":
            self.broker.kill()
            self.broker.start()
        elif fault == "broker_hang":
            self.broker.pause()
            self._stored(prefix, n)  # storing never waits for the network
            self.broker.resume()
        elif fault == "centre_restart":
            self.duplicates += self.centre.duplicates
            self.centre.stop()
            self.centre = self._centre()
        self._stored(prefix, n)

    def _stored(self, prefix: str, k: int) -> None:
        self.hub.wait_stored(prefix, k)
        self._count(prefix)

    def _count(self, prefix: str) -> None:
        self.sent.update(i for i in self.hub.stored[-60:] if i.startswith(prefix))

    def finish(self) -> dict[str, int]:
        def received() -> set[str]:
            if not self.journal.exists():
                return set()
            ids = set()
            for line in self.journal.read_text().splitlines():
                try:
                    ids.add(json.loads(line)["id"])
                except ValueError:
                    pass  # the line the centre is writing right now
            return ids

        try:
            wait_sync(lambda: self.sent <= received(), 90, "every sent alarm at the centre")
        except AssertionError:
            pass  # reported as lost below
        got = received()
        self.duplicates += self.centre.duplicates
        lost = self.sent - got
        if lost:  # what the hub still holds, for the report
            import signal
            import time

            self.hub.proc.send_signal(signal.SIGUSR2)  # thread stacks into hub.log
            time.sleep(0.5)
            self.hub.proc.send_signal(signal.SIGUSR1)  # task stacks, if the loop runs
            time.sleep(1)
            import sqlite3

            db = sqlite3.connect(f"file:{self.dir}/var/outbox.sqlite?mode=ro", uri=True)
            rows = db.execute("SELECT msg_id, attempts, next_try FROM outbox ORDER BY seq"
                              " LIMIT 10").fetchall()
            (depth,) = db.execute("SELECT COUNT(*) FROM outbox").fetchone()
            db.close()
            print(f"\nlost (first 10): {sorted(lost)[:10]}\noutbox depth {depth}: {rows}")
        return {"sent": len(self.sent), "received": len(got & self.sent),
                "lost": len(lost), "duplicated": self.duplicates}

    def close(self) -> None:
        self.hub.kill()
        self.centre.stop()
        self.broker.close()


def run_chaos(workdir: Path, trials: int, seed: int) -> dict[str, int]:
    chaos = Chaos(workdir, seed)
    try:
        for t in range(trials):
            chaos.trial(t)
        result = {"trials": trials, "seed": seed, **chaos.finish()}
    finally:
        chaos.close()
    print("\nchaos: " + " ".join(f"{k}={v}" for k, v in result.items())
          + " faults=" + json.dumps(chaos.faults))
    return result


def _seed() -> int:
    return int(os.environ.get("CHAOS_SEED", random.randrange(1 << 30)))


def test_chaos_quick(tmp_path: Path) -> None:
    r = run_chaos(tmp_path, int(os.environ.get("CHAOS_TRIALS", 12)), _seed())
    assert r["sent"] > 0 and r["lost"] == 0, r


@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_chaos_soak(tmp_path: Path) -> None:
    r = run_chaos(tmp_path, int(os.environ.get("CHAOS_TRIALS", 1000)), _seed())
    assert r["sent"] > 0 and r["lost"] == 0, r
