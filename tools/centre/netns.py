"""A network namespace joined to this one by a veth pair, for network-cut tests.

`NetNs.create()` makes namespace `<name>` with interface `<name>-i` (PEER_IP) whose peer
`<name>-o` (HOST_IP) stays here. `cut()` takes the host end down: packets vanish, no TCP
connection is closed, no RST is sent (a router losing its uplink). `restore()` brings it
back. Needs CAP_NET_ADMIN; `NetNs.available()` says whether this machine allows it.
"""

from __future__ import annotations

import itertools
import os
import subprocess

_seq = itertools.count()


def _ip(*args: str) -> None:
    r = subprocess.run(["ip", *args], capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {r.stderr.strip()}")


class NetNs:
    def __init__(self, name: str | None = None, subnet: int | None = None) -> None:
        n = next(_seq)
        self.name = name or f"tg{os.getpid() % 100000}{n}"[:11]
        third = subnet if subnet is not None else (os.getpid() + n) % 250 + 1
        self.host_ip = f"10.231.{third}.1"
        self.peer_ip = f"10.231.{third}.2"
        self.host_if = f"{self.name}-o"
        self.peer_if = f"{self.name}-i"
        self.created = False

    @staticmethod
    def available() -> bool:
        probe = NetNs()
        try:
            probe.create()
        except (RuntimeError, FileNotFoundError):
            return False
        finally:
            probe.close()
        return True

    def create(self) -> NetNs:
        _ip("netns", "add", self.name)
        self.created = True
        _ip("link", "add", self.host_if, "type", "veth", "peer", "name", self.peer_if)
        _ip("link", "set", self.peer_if, "netns", self.name)
        _ip("addr", "add", f"{self.host_ip}/30", "dev", self.host_if)
        _ip("link", "set", self.host_if, "up")
        _ip("-n", self.name, "addr", "add", f"{self.peer_ip}/30", "dev", self.peer_if)
        _ip("-n", self.name, "link", "set", self.peer_if, "up")
        _ip("-n", self.name, "link", "set", "lo", "up")
        return self

    def command(self, argv: list[str]) -> list[str]:
        """argv run inside the namespace."""
        return ["ip", "netns", "exec", self.name, *argv]

    def cut(self) -> None:
        _ip("link", "set", self.host_if, "down")

    def restore(self) -> None:
        _ip("link", "set", self.host_if, "up")

    def close(self) -> None:
        if not self.created:
            return
        self.created = False
        # Deleting the namespace deletes its veth end, and with it the peer here.
        subprocess.run(["ip", "netns", "del", self.name], capture_output=True)
        subprocess.run(["ip", "link", "del", self.host_if], capture_output=True)

    def __enter__(self) -> NetNs:
        return self.create()

    def __exit__(self, *exc: object) -> None:
        self.close()
