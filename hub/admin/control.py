"""The local control socket between the admin CLI and the running hub.

A Unix stream socket in the hub's data directory, mode 0660, group = the admin group
([admin] group, default "tryggheim-admin"): only root, the hub's own user and members of
that group can connect. The server also checks the peer's uid from the kernel (SO_PEERCRED)
rather than trusting the socket mode alone, and records it in the audit log.

Wire format: the client sends one JSON line {"cmd": ..., "args": {...}, "user": <claimed>};
the server answers one JSON line {"ok": true, "result": ...} or {"ok": false, "error": ...}.
A streaming command (events --follow) answers with one JSON line per event until the client
goes away.
"""

from __future__ import annotations

import asyncio
import contextlib
import grp
import json
import logging
import os
import pwd
import socket
import struct
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

MAX_REQUEST = 64 * 1024
DEFAULT_GROUP = "tryggheim-admin"  # [admin] group when not configured (hub/config/settings.py)


class ControlError(Exception):
    """The hub answered with an error, or could not be reached."""


@dataclass(frozen=True)
class Peer:
    pid: int
    uid: int
    gid: int


@dataclass(frozen=True)
class Request:
    cmd: str
    args: dict[str, Any]
    claimed_user: str | None
    peer: Peer


# A handler returns a result (sent as one line) or an async iterator (streamed).
Handler = Callable[[Request], Awaitable[Any]]


def peer_of(sock: socket.socket) -> Peer:
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    pid, uid, gid = struct.unpack("3i", creds)
    return Peer(pid, uid, gid)


def admin_gid(group: str) -> int | None:
    try:
        return grp.getgrnam(group).gr_gid
    except KeyError:
        return None


def is_admin(uid: int, gid: int, group: str) -> bool:
    if uid in (0, os.getuid()):
        return True
    g = admin_gid(group)
    if g is None:
        return False
    if gid == g:
        return True
    try:
        name = pwd.getpwuid(uid).pw_name
    except KeyError:
        return False
    return name in grp.getgrgid(g).gr_mem or pwd.getpwuid(uid).pw_gid == g


class ControlServer:
    def __init__(self, path: Path, group: str, handler: Handler) -> None:
        self.path = path
        self.group = group
        self.handler = handler
        self._server: asyncio.base_events.Server | None = None
        self.refused = 0

    async def start(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()  # a stale socket from a killed hub
        # Bound under a temporary name and renamed once its group and mode are set, so a
        # client (or systemd, or a test) never sees the socket with the wrong owner.
        staging = self.path.with_name(self.path.name + ".new")
        with contextlib.suppress(FileNotFoundError):
            staging.unlink()
        old = os.umask(0o117)  # never world-accessible, not even for an instant
        try:
            self._server = await asyncio.start_unix_server(self._serve, path=str(staging),
                                                           limit=MAX_REQUEST)
        finally:
            os.umask(old)
        gid = admin_gid(self.group)
        if gid is not None:
            try:
                os.chown(staging, -1, gid)
            except PermissionError:
                log.warning("cannot give %s to group %s; only %s can use the admin CLI",
                            self.path, self.group, pwd.getpwuid(os.getuid()).pw_name)
        elif self.group == DEFAULT_GROUP:
            # Not installed as a service (a developer's machine, the demo): the user running
            # the hub is the one using the CLI. Not worth a warning on every start.
            log.info("admin group %r does not exist: only root and %s can use the admin CLI",
                     self.group, pwd.getpwuid(os.getuid()).pw_name)
        else:
            # Named in the configuration, so meant to exist: probably a typo.
            log.warning("admin group %r does not exist: only root and the hub's user can use"
                        " the admin CLI (create it: groupadd %s)", self.group, self.group)
        os.chmod(staging, 0o660)
        os.replace(staging, self.path)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            peer = peer_of(writer.get_extra_info("socket"))
            if not is_admin(peer.uid, peer.gid, self.group):
                self.refused += 1
                await _send(writer, {"ok": False, "error": f"uid {peer.uid} is not in the"
                                     f" admin group {self.group!r}"})
                return
            try:
                line = await reader.readline()
                msg = json.loads(line)
                if not isinstance(msg, dict) or not isinstance(msg.get("cmd"), str):
                    raise ValueError("expected {\"cmd\": ...}")
                args = msg.get("args") or {}
                if not isinstance(args, dict):
                    raise ValueError("args must be an object")
            except (ValueError, asyncio.LimitOverrunError) as e:
                await _send(writer, {"ok": False, "error": f"bad request: {e}"})
                return
            claimed = msg.get("user") if isinstance(msg.get("user"), str) else None
            req = Request(msg["cmd"], args, claimed, peer)
            try:
                result = await self.handler(req)
            except ControlError as e:
                await _send(writer, {"ok": False, "error": str(e)})
                return
            except Exception as e:  # a bug in one command must not take the hub down
                log.exception("control command %s failed", req.cmd)
                await _send(writer, {"ok": False, "error": f"internal error: {e}"})
                return
            if hasattr(result, "__aiter__"):
                await _send(writer, {"ok": True, "stream": True})
                async for item in result:
                    await _send(writer, item)
            else:
                await _send(writer, {"ok": True, "result": result})
        except (ConnectionError, BrokenPipeError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()


async def _send(writer: asyncio.StreamWriter, obj: Any) -> None:
    writer.write((json.dumps(obj, ensure_ascii=False) + "\n").encode())
    await writer.drain()


# -- client (the CLI) ------------------------------------------------------------------------

def claimed_user() -> str | None:
    """Who is at the keyboard: through sudo, the SSH user, not root."""
    return os.environ.get("SUDO_USER") or os.environ.get("USER") or None


def _connect(path: Path, timeout: float) -> socket.socket:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        s.connect(str(path))
    except FileNotFoundError:
        s.close()
        raise ControlError(f"{path}: no control socket (is the hub running?)") from None
    except PermissionError:
        s.close()
        raise ControlError(f"{path}: permission denied (are you in the admin group? try"
                           " sudo)") from None
    except (ConnectionRefusedError, OSError) as e:
        s.close()
        raise ControlError(f"{path}: cannot connect: {e}") from None
    return s


def _request(s: socket.socket, cmd: str, args: dict[str, Any] | None) -> None:
    try:
        s.sendall((json.dumps({"cmd": cmd, "args": args or {}, "user": claimed_user()})
                   + "\n").encode())
    except BrokenPipeError:
        pass  # refused before we asked: the refusal is waiting to be read
    except OSError as e:
        raise ControlError(f"cannot talk to the hub: {e}") from None


def _lines(s: socket.socket) -> Iterator[dict[str, Any]]:
    buf = b""
    while True:
        try:
            chunk = s.recv(65536)
        except TimeoutError:
            raise ControlError("the hub did not answer in time") from None
        except ConnectionResetError:
            chunk = b""
        if not chunk:
            if buf.strip():
                yield json.loads(buf)
            return
        buf += chunk
        while b"\n" in buf:
            line, buf = buf.split(b"\n", 1)
            if line.strip():
                yield json.loads(line)


def call(path: Path, cmd: str, args: dict[str, Any] | None = None,
         timeout: float = 30.0) -> Any:
    """One request, one answer. Raises ControlError with the hub's message on failure."""
    with _connect(path, timeout) as s:
        _request(s, cmd, args)
        for reply in _lines(s):
            if not reply.get("ok"):
                raise ControlError(str(reply.get("error")))
            return reply.get("result")
    raise ControlError("the hub closed the connection without an answer")


def stream(path: Path, cmd: str, args: dict[str, Any] | None = None) -> Iterator[dict[str, Any]]:
    """A streaming request (events --follow): yields items until the hub stops."""
    s = _connect(path, 30.0)
    s.settimeout(None)
    with s:
        _request(s, cmd, args)
        it = _lines(s)
        first = next(it, None)
        if first is None or not first.get("ok"):
            raise ControlError(str((first or {}).get("error", "no answer")))
        yield from it


async def aiter_queue(q: asyncio.Queue[dict[str, Any]],
                      backlog: list[dict[str, Any]]) -> AsyncIterator[dict[str, Any]]:
    for item in backlog:
        yield item
    while True:
        yield await q.get()
