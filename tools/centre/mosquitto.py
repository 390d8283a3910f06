"""A throwaway Mosquitto broker on a free loopback port, for tests and the demo.

Optional TLS (`tls=make_tls(dir)`: a self-signed CA, a server and a client certificate made
with openssl), passwords (`users={"hub-1": "secret"}`) and an ACL file body (`acl=...`);
`client_id_is_user` sets `use_username_as_clientid` (docs/mosquitto/tryggheim.conf).

Every broker with passwords also has an `observer` user that may read everything (`#`), so a
test can watch all traffic whatever the ACL (tests/conftest.py validates what hubs publish).
"""

from __future__ import annotations

import os
import secrets
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
        client_id_is_user: bool = False,
        dynsec: bool = False,
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
        self.client_id_is_user = client_id_is_user
        # The dynamic-security plugin (clients and roles set at run time with `ctrl`): the
        # one ACL in Mosquitto 2.0 that refuses subscriptions in the SUBACK; acl_file grants
        # every subscription and filters on delivery.
        self.dynsec = dynsec
        self.admin = ("admin", secrets.token_hex(8))
        # (user, password) of a user who may read every topic; None: anonymous works.
        self.observer: tuple[str, str] | None = (
            ("observer", secrets.token_hex(8)) if users is not None or dynsec else None)
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
        if self.client_id_is_user:
            lines.append("use_username_as_clientid true")
        if self.tls is not None:
            lines += [f"cafile {self.tls.ca}", f"certfile {self.tls.server_cert}",
                      f"keyfile {self.tls.server_key}", "tls_version tlsv1.2"]
            if self.require_certificate:
                lines += ["require_certificate true", "use_identity_as_username true"]
        if self.users is not None:
            pw = self.dir / "passwd"
            users = dict(self.users)
            if self.observer is not None:
                users[self.observer[0]] = self.observer[1]
            pw.write_text("".join(f"{u}:{p}\n" for u, p in users.items()))
            pw.chmod(0o600)
            subprocess.run(["mosquitto_passwd", "-U", str(pw)], check=True,
                           capture_output=True)
            lines += ["allow_anonymous false", f"password_file {pw}"]
        elif self.dynsec:
            plugin = next((p for p in ("/usr/lib/x86_64-linux-gnu/mosquitto_dynamic_security.so",
                                       "/usr/lib/aarch64-linux-gnu/mosquitto_dynamic_security.so",
                                       "/usr/lib/mosquitto_dynamic_security.so")
                           if os.path.exists(p)), None)
            if plugin is None:
                raise FileNotFoundError("mosquitto's dynamic-security plugin is not installed")
            store = self.dir / "dynsec.json"
            if not store.exists():
                subprocess.run(["mosquitto_ctrl", "dynsec", "init", str(store), *self.admin],
                               check=True, capture_output=True)
            lines += ["allow_anonymous false", f"plugin {plugin}",
                      f"plugin_opt_config_file {store}"]
        elif self.require_certificate:
            lines.append("allow_anonymous false")
        else:
            lines.append("allow_anonymous true")
        if self.acl is not None:
            acl = self.dir / "acl"
            body = self.acl
            if self.observer is not None:
                body += f"\n\nuser {self.observer[0]}\ntopic read #\n"
            acl.write_text(body)
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
        if self.dynsec and self.observer is not None:
            user, pw = self.observer
            self.ctrl("createClient", user, "-p", pw, check=False)  # exists after a restart
            self.ctrl("createRole", "observer", check=False)
            self.ctrl("addRoleACL", "observer", "subscribePattern", "#", "allow", check=False)
            self.ctrl("addClientRole", user, "observer", check=False)
        return self

    def ctrl(self, *args: str, check: bool = True) -> str:
        """A dynamic-security command (`mosquitto_ctrl dynsec ...`) on this broker."""
        r = subprocess.run(
            ["mosquitto_ctrl", "-h", self.host, "-p", str(self.port), "-u", self.admin[0],
             "-P", self.admin[1], "dynsec", *args], capture_output=True, text=True, timeout=30)
        if check and r.returncode != 0:
            raise RuntimeError(f"mosquitto_ctrl dynsec {' '.join(args)}: {r.stderr}{r.stdout}")
        return r.stdout

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
