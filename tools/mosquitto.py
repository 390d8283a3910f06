"""A throwaway Mosquitto broker on a free loopback port, for tests and the demo.

Optional TLS (`tls=make_tls(dir)`: a self-signed CA, a server and a client certificate made
with openssl), passwords (`users={"hub-1": "secret"}`) and an ACL file body (`acl=...`).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
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


@dataclass(frozen=True)
class TlsFiles:
    ca: Path
    ca_key: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def _openssl(*args: str, cwd: Path) -> None:
    r = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"openssl {' '.join(args)}: {r.stderr}")


def make_tls(directory: Path, client_cn: str = "hub-1", ca_cn: str = "tryggheim-test-ca"
             ) -> TlsFiles:
    """A self-signed CA (EC P-256) with a server certificate for localhost/127.0.0.1 and a
    client certificate whose CN the broker can use as user name."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]
    _openssl("req", "-x509", *ec, "-days", "2", "-subj", f"/CN={ca_cn}",
             "-keyout", "ca.key", "-out", "ca.crt", cwd=d)
    for name, cn, ext in (
        ("server", "localhost",
         "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth"),
        ("client", client_cn, "extendedKeyUsage=clientAuth"),
    ):
        (d / f"{name}.ext").write_text(ext + "\n")
        _openssl("req", "-new", *ec, "-subj", f"/CN={cn}", "-keyout", f"{name}.key",
                 "-out", f"{name}.csr", cwd=d)
        _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
                 "-CAcreateserial", "-days", "2", "-extfile", f"{name}.ext",
                 "-out", f"{name}.crt", cwd=d)
    for key in d.glob("*.key"):
        key.chmod(0o600)
    return TlsFiles(d / "ca.crt", d / "ca.key", d / "server.crt", d / "server.key",
                    d / "client.crt", d / "client.key")


class Mosquitto:
    """`extra_conf` lines are appended to the generated config.

    `host` is the address to listen on (a veth address for the network-cut test);
    `autosave_interval` is how often persistence is written (a SIGKILL loses what came
    after the last save: set it high to make that loss certain)."""

    def __init__(
        self,
        workdir: str | Path | None = None,
        port: int | None = None,
        extra_conf: str = "",
        *,
        host: str = "127.0.0.1",
        tls: TlsFiles | None = None,
        require_certificate: bool = False,
        users: dict[str, str] | None = None,
        acl: str | None = None,
        autosave_interval: int = 1,
    ) -> None:
        self._own_dir = workdir is None
        self.dir = Path(workdir or tempfile.mkdtemp(prefix="mosquitto-"))
        self.host = host
        self.port = port or free_port()
        self.extra_conf = extra_conf
        self.tls = tls
        self.require_certificate = require_certificate
        self.users = users
        self.acl = acl
        self.autosave_interval = autosave_interval
        self.proc: subprocess.Popen[bytes] | None = None
        binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        if not os.path.exists(binary):
            raise FileNotFoundError("mosquitto is not installed (apt-get install mosquitto)")
        self.binary = binary

    def write_conf(self) -> Path:
        data = self.dir / "data"
        data.mkdir(parents=True, exist_ok=True)
        conf = self.dir / "mosquitto.conf"
        lines = [f"listener {self.port} {self.host}"]
        if self.tls is not None:
            lines += [f"cafile {self.tls.ca}", f"certfile {self.tls.server_cert}",
                      f"keyfile {self.tls.server_key}", "tls_version tlsv1.2"]
            if self.require_certificate:
                lines += ["require_certificate true", "use_identity_as_username true"]
        if self.users is not None:
            pw = self.dir / "passwd"
            pw.write_text("".join(f"{u}:{p}\n" for u, p in self.users.items()))
            pw.chmod(0o600)
            subprocess.run(["mosquitto_passwd", "-U", str(pw)], check=True,
                           capture_output=True)
            lines += ["allow_anonymous false", f"password_file {pw}"]
        elif self.require_certificate:
            lines.append("allow_anonymous false")
        else:
            lines.append("allow_anonymous true")
        if self.acl is not None:
            acl = self.dir / "acl"
            acl.write_text(self.acl)
            lines.append(f"acl_file {acl}")
        lines += [
            "persistence true",
            f"persistence_location {data}/",
            f"autosave_interval {self.autosave_interval}",
            f"log_dest file {self.dir}/mosquitto.log",
            "log_type error", "log_type warning", "log_type notice",
        ]
        conf.write_text("\n".join(lines) + "\n" + self.extra_conf)
        if self.tls is not None and os.geteuid() == 0:
            for p in (self.tls.ca.parent, *self.tls.ca.parent.iterdir()):
                shutil.chown(p, "mosquitto")
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
            wait_for_port(self.port, host=self.host)
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

    def pause(self) -> None:
        """SIGSTOP: a black hole. Connections stay open, nothing answers."""
        if self.proc is not None:
            self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        if self.proc is not None:
            self.proc.send_signal(signal.SIGCONT)

    def log_text(self) -> str:
        try:
            return (self.dir / "mosquitto.log").read_text()
        except OSError:
            return ""

    def close(self) -> None:
        self.stop()
        if self._own_dir:
            shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> Mosquitto:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()
