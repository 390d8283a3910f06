"""A throwaway Mosquitto broker on a free loopback port, for tests and the demo."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port(port: int, timeout: float = 10.0, host: str = "127.0.0.1") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.02)
    raise TimeoutError(f"nothing listens on {host}:{port}")


class Mosquitto:
    """`extra_conf` lines are appended to the generated config (TLS, passwords, ACLs)."""

    def __init__(
        self, workdir: str | Path | None = None, port: int | None = None, extra_conf: str = ""
    ) -> None:
        self._own_dir = workdir is None
        self.dir = Path(workdir or tempfile.mkdtemp(prefix="mosquitto-"))
        self.port = port or free_port()
        self.extra_conf = extra_conf
        self.proc: subprocess.Popen[bytes] | None = None
        binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        if not os.path.exists(binary):
            raise FileNotFoundError("mosquitto is not installed (apt-get install mosquitto)")
        self.binary = binary

    def write_conf(self) -> Path:
        data = self.dir / "data"
        data.mkdir(parents=True, exist_ok=True)
        conf = self.dir / "mosquitto.conf"
        conf.write_text(
            f"listener {self.port} 127.0.0.1\n"
            "allow_anonymous true\n"
            "persistence true\n"
            f"persistence_location {data}/\n"
            "autosave_interval 1\n"
            f"log_dest file {self.dir}/mosquitto.log\n"
            "log_type error\nlog_type warning\nlog_type notice\n"
            + self.extra_conf
        )
        if os.geteuid() == 0:
            # As root, mosquitto drops to its own user and must still reach its files.
            shutil.chown(self.dir, "mosquitto")
            for p in self.dir.rglob("*"):
                shutil.chown(p, "mosquitto")
        return conf

    def start(self) -> Mosquitto:
        conf = self.write_conf()
        self.proc = subprocess.Popen(
            [self.binary, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        try:
            wait_for_port(self.port)
        except TimeoutError:
            self.proc.kill()
            _, err = self.proc.communicate()
            raise RuntimeError(f"mosquitto did not start: {err.decode()}") from None
        return self

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(timeout=10)
        if self.proc is not None and self.proc.stderr is not None:
            self.proc.stderr.close()
        self.proc = None

    def kill(self) -> None:
        self.stop(signal.SIGKILL)

    def close(self) -> None:
        self.stop()
        if self._own_dir:
            shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> Mosquitto:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()
