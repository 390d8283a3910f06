"""`make bench`: runs every tools/bench/ module's `run()` and prints its report.

Each benchmark measures against a baseline in the same process and prints ratios, with the
machine it ran on; figures are never asserted in unit tests.
"""

from __future__ import annotations

import importlib
import os
import platform
import sys
from pathlib import Path


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}, {platform.system()}"


def main(argv: list[str] | None = None) -> int:
    only = set(argv if argv is not None else sys.argv[1:])
    print(f"machine: {machine()}\n")
    for path in sorted(Path(__file__).parent.glob("[!_]*.py")):
        name = path.stem
        if only and name not in only:
            continue
        print(f"== {name} ==")
        module = importlib.import_module(f"{__package__}.{name}")
        module.run()
        print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
