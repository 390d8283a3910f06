"""The firmware imports only modules that exist on MicroPython for ESP32.

Statically, from the source: a module that is missing on the device fails only at runtime
there (in the field, at the moment it is needed), so it is caught here instead.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# Built-in and frozen modules of the MicroPython ESP32_GENERIC firmware (v1.2x), as listed by
# help("modules") on the board; docs.micropython.org/en/latest/library/ and ports/esp32
# (modules/ + boards/manifest.py).
ESP32_MODULES = {
    "array", "asyncio", "binascii", "bluetooth", "builtins", "cmath", "collections",
    "cryptolib", "deflate", "errno", "esp", "esp32", "espnow", "framebuf", "gc", "hashlib",
    "heapq", "io", "json", "machine", "math", "micropython", "network", "os", "platform",
    "random", "re", "select", "socket", "ssl", "struct", "sys", "time", "uctypes", "vfs",
    "_thread", "neopixel", "onewire", "dht",
}
FIRMWARE = sorted((ROOT / "firmware").glob("*.py"))
PROTOCOLS = sorted((ROOT / "protocols").glob("*.py"))
OWN = {p.stem for p in FIRMWARE} | {"protocols"}


def imports(path: Path) -> list[tuple[int, str, bool, bool]]:
    """(line, top-level module, guarded by `except ImportError`, inside a host_* function)."""
    tree = ast.parse(path.read_text(), str(path))
    out: list[tuple[int, str, bool, bool]] = []

    def walk(node: ast.AST, guarded: bool, host: bool) -> None:
        for child in ast.iter_child_nodes(node):
            g, h = guarded, host
            if isinstance(child, ast.Try) and any(
                isinstance(hd.type, ast.Name) and hd.type.id == "ImportError"
                for hd in child.handlers
            ):
                g = True
            if isinstance(child, ast.FunctionDef) and child.name.startswith("host_"):
                h = True  # documented CPython-only helpers (hub side), never called on a device
            if isinstance(child, ast.Import):
                out.extend((child.lineno, a.name.split(".")[0], g, h) for a in child.names)
            elif isinstance(child, ast.ImportFrom) and child.module and child.level == 0:
                out.append((child.lineno, child.module.split(".")[0], g, h))
            walk(child, g, h)

    walk(tree, False, False)
    return out


@pytest.mark.parametrize("path", FIRMWARE + PROTOCOLS, ids=lambda p: str(p.relative_to(ROOT)))
def test_imports_exist_on_micropython_esp32(path: Path) -> None:
    allowed = ESP32_MODULES | OWN
    bad = [
        f"{path.relative_to(ROOT)}:{line}: import {mod}"
        for line, mod, guarded, host in imports(path)
        if mod not in allowed and not guarded and not host
    ]
    assert not bad, "not on MicroPython ESP32:\n" + "\n".join(bad)


def test_the_check_catches_a_cpython_only_import(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("import json\nimport dataclasses\ntry:\n    import typing\nexcept ImportError:\n"
                   "    pass\n")
    found = {(mod, guarded) for _, mod, guarded, _ in imports(bad)}
    assert ("dataclasses", False) in found and ("typing", True) in found
    assert "dataclasses" not in ESP32_MODULES
