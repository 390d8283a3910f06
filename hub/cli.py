"""`tryggheim` command line: the hub service and its admin and installer tools."""

from __future__ import annotations

import argparse
import logging
import sys

from hub import config


def cmd_run(args: argparse.Namespace) -> int:
    from hub.service import run_forever

    try:
        cfg = config.load(args.config)
    except config.ConfigError as e:
        print(f"tryggheim: configuration is not valid:\n{e}", file=sys.stderr)
        return 2
    run_forever(cfg)
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="tryggheim", description=__doc__)
    p.add_argument("-v", "--verbose", action="store_true")
    sub = p.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the hub service")
    run.add_argument("--config", required=True, help="hub configuration file (TOML)")
    run.set_defaults(func=cmd_run)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    rc: int = args.func(args)
    return rc


if __name__ == "__main__":
    sys.exit(main())
