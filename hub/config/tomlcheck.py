"""Checked reading of TOML tables: every problem is collected as "file:line: field.path: problem".

tomllib gives values but no positions, so `Locator` finds the line of a field path by reading
the text the way a person would: table headers, array-of-table headers (counted, so
`device[2]` is the third `[[device]]`) and `key =` lines. Where a field is not written in the
file (a missing key, a value inside an inline table) the nearest enclosing line is named.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

_HEADER = re.compile(r"^\s*(\[\[?)\s*([A-Za-z0-9_.\-\"' ]+?)\s*\]\]?\s*(#.*)?$")
_KEY = re.compile(r"^\s*([A-Za-z0-9_\-\"'.]+)\s*=")


def _bare(name: str) -> str:
    return ".".join(p.strip().strip("\"'") for p in name.split("."))


class Locator:
    def __init__(self, text: str) -> None:
        self.lines: dict[str, int] = {}
        self._counts: dict[str, int] = {}
        counts = self._counts
        table = ""
        in_multiline: str | None = None
        for n, line in enumerate(text.splitlines(), start=1):
            if in_multiline is not None:
                if in_multiline in line:
                    in_multiline = None
                continue
            m = _HEADER.match(line)
            if m:
                name = _bare(m.group(2))
                if m.group(1) == "[[":
                    parent, _, last = name.rpartition(".")
                    base = f"{self._resolve(parent)}.{last}" if parent else last
                    i = counts.get(base, 0)
                    counts[base] = i + 1
                    table = f"{base}[{i}]"
                    self.lines.setdefault(base, n)  # the array as a whole: its first entry
                else:
                    table = self._resolve(name)
                self.lines.setdefault(table, n)
                continue
            k = _KEY.match(line)
            if k:
                key = _bare(k.group(1))
                path = f"{table}.{key}" if table else key
                self.lines.setdefault(path, n)
                rest = line[k.end():]
                for q in ('"""', "'''"):
                    if rest.count(q) == 1:
                        in_multiline = q

    def _resolve(self, name: str) -> str:
        # `[device.extra]` after `[[device]]` belongs to the latest device entry.
        parts = name.split(".")
        out = ""
        for p in parts:
            cand = f"{out}.{p}" if out else p
            n = self._counts.get(cand)
            out = f"{cand}[{n - 1}]" if n else cand
        return out

    def line(self, path: str) -> int | None:
        """Line of `path`, or of the nearest enclosing table or key that is written down."""
        p = path
        while p:
            if p in self.lines:
                return self.lines[p]
            cut = max(p.rfind("."), p.rfind("["))
            p = p[:cut] if cut > 0 else ""
        return None


class Reader:
    """Typed access to TOML tables that records problems instead of stopping at the first."""

    def __init__(self, file: Path, problems: list[str], text: str | None = None) -> None:
        self.file = file
        self.problems = problems
        self.locator = Locator(text) if text is not None else None

    def where(self, path: str) -> str:
        n = self.locator.line(path) if self.locator else None
        return f"{self.file}:{n}" if n else f"{self.file}"

    def error(self, path: str, problem: str) -> None:
        self.problems.append(f"{self.where(path)}: {path}: {problem}")

    def get(
        self, table: dict[str, Any], path: str, key: str, kind: type | tuple[type, ...],
        default: Any = ...,
    ) -> Any:
        full = f"{path}.{key}" if path else key
        if key not in table:
            if default is ...:
                self.error(full, "missing")
            return None if default is ... else default
        value = table[key]
        kinds = kind if isinstance(kind, tuple) else (kind,)
        if isinstance(value, bool) and bool not in kinds or not isinstance(value, kinds):
            names = " or ".join(k.__name__ for k in kinds)
            self.error(full, f"expected {names}, got {type(value).__name__} {value!r}")
            return None if default is ... else default
        if float in kinds and isinstance(value, int):
            value = float(value)
        return value

    def number(
        self, table: dict[str, Any], path: str, key: str, default: Any, lo: float, hi: float,
        kind: type = int,
    ) -> Any:
        """An int (or float) in [lo, hi]; out of range is a problem and gives the default."""
        kinds: tuple[type, ...] = (int, float) if kind is float else (int,)
        value = self.get(table, path, key, kinds, default)
        if value is None or value is default:
            return value
        if not lo <= value <= hi:
            full = f"{path}.{key}" if path else key
            self.error(full, f"{value} is out of range {lo:g}..{hi:g}")
            return default
        return value

    def table(self, parent: dict[str, Any], path: str, key: str) -> dict[str, Any]:
        value = parent.get(key, {})
        if not isinstance(value, dict):
            self.error(f"{path}.{key}" if path else key, f"expected a table, got {type(value).__name__}")
            return {}
        return value

    def tables(self, parent: dict[str, Any], path: str, key: str) -> list[dict[str, Any]]:
        """An array of tables ([[key]])."""
        value = parent.get(key, [])
        full = f"{path}.{key}" if path else key
        if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
            self.error(full, f"expected [[{key}]] tables")
            return []
        return value

    def unknown(self, table: dict[str, Any], path: str, allowed: set[str]) -> None:
        for key in table:
            if key not in allowed:
                full = f"{path}.{key}" if path else key
                hint = _closest(key, allowed)
                self.error(full, "unknown setting" + (f" (did you mean {hint!r}?)" if hint else ""))


def _closest(key: str, allowed: set[str]) -> str | None:
    import difflib

    m = difflib.get_close_matches(key, sorted(allowed), n=1, cutoff=0.75)
    return m[0] if m else None
