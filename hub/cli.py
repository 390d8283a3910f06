"""`tryggheim` command line: the hub service and its admin and installer tools."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from hub.config import settings as config


def cmd_run(args: argparse.Namespace) -> int:
    from hub.config import keys
    from hub.service import run_forever

    try:
        cfg = keys.attach(config.load(args.config))
    except config.ConfigError as e:
        print(f"tryggheim: configuration is not valid:\n{e}", file=sys.stderr)
        return 2
    run_forever(cfg, capture=Path(args.capture) if args.capture else None)
    return 0


def cmd_decode(args: argparse.Namespace) -> int:
    from hub.config import keys
    from hub.decode.decoder import inspect

    if (args.hex is None) == (args.capture is None):
        print("tryggheim decode: give either HEX (with --mac) or --capture FILE",
              file=sys.stderr)
        return 2
    data = b""
    if args.hex is not None:
        try:
            data = bytes.fromhex(args.hex.replace(":", "").replace(" ", ""))
        except ValueError:
            print(f"tryggheim decode: {args.hex!r} is not hex", file=sys.stderr)
            return 2
        if args.mac is None:
            print("tryggheim decode: HEX needs the sender's MAC address: --mac "
                  "AA:BB:CC:DD:EE:FF (it is part of the encryption nonce)", file=sys.stderr)
            return 2
        if not _is_mac(args.mac):
            print(f"tryggheim decode: --mac {args.mac!r} is not a MAC address", file=sys.stderr)
            return 2
    candidates: dict[str, bytes] = {}
    if args.key:
        try:
            key = bytes.fromhex(args.key)
        except ValueError:
            key = b""
        if len(key) != 16:
            print("tryggheim decode: --key must be 32 hex digits", file=sys.stderr)
            return 2
        candidates["--key"] = key
    if args.keys:
        try:
            candidates.update(keys.load(args.keys))
        except config.ConfigError as e:
            print(f"tryggheim decode: {e}", file=sys.stderr)
            return 2
    if args.capture is not None:
        return _decode_capture(Path(args.capture), candidates)
    result = inspect(data, args.mac, candidates)
    print(json.dumps(result, indent=2))
    return 1 if "error" in result else 0


def _decode_capture(path: Path, candidates: dict[str, bytes]) -> int:
    """Every advert of a capture file, one JSON object per line; 1 if any did not decode."""
    from hub.decode.decoder import inspect
    from hub.radio import capture as radio_capture

    failed = False
    try:
        for n, item in radio_capture.read(path):
            if isinstance(item, ValueError):
                out: dict[str, object] = {"line": n, "error": f"{path}:{n}: {item}"}
            else:
                out = {"line": n, "t": item.received_at, "rssi": item.rssi,
                       **inspect(item.service_data, item.mac, candidates)}
            failed = failed or "error" in out
            print(json.dumps(out))
    except OSError as e:
        print(f"tryggheim decode: {path}: {e.strerror}", file=sys.stderr)
        return 2
    return 1 if failed else 0


def _is_mac(s: str) -> bool:
    parts = s.split(":")
    return len(parts) == 6 and all(
        len(p) == 2 and all(c in "0123456789abcdefABCDEF" for c in p) for p in parts
    )


def _version() -> str:
    from importlib import metadata

    try:
        return metadata.version("tryggheim")
    except metadata.PackageNotFoundError:  # run from a checkout that was never installed
        return "unknown (not installed)"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="tryggheim", description=__doc__)
    p.add_argument("-v", "--verbose", action="store_true")
    p.add_argument("--version", action="version", version=f"tryggheim {_version()}")
    sub = p.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the hub service")
    run.add_argument("--config", required=True,
                     help="hub configuration directory (site.toml, devices.toml, ...) or file")
    run.add_argument("--capture", metavar="FILE",
                     help="append every advert received to FILE (JSON lines)")
    run.set_defaults(func=cmd_run)
    dec = sub.add_parser("decode", help="decode one BTHome advert and print it as JSON")
    dec.add_argument("hex", nargs="?",
                     help="service data (from the device-info byte) or a whole advert")
    dec.add_argument("--mac", help="sender address, AA:BB:CC:DD:EE:FF (with HEX)")
    dec.add_argument("--capture", metavar="FILE",
                     help="decode every advert of a capture file (run --capture), one per line")
    dec.add_argument("--key", help="the device key, 32 hex digits")
    dec.add_argument("--keys", metavar="FILE", help="keys file; every key in it is tried")
    dec.set_defaults(func=cmd_decode)
    from hub.installer import scan

    scan.add_arguments(sub.add_parser(
        "scan", help="list nearby Tryggheim devices: signal, battery, key (installer's check)"))
    from hub.admin import watch

    watch.add_arguments(sub.add_parser(
        "watch", help="walk test: every device of the home live (state, battery, signal)"))
    from hub.admin import cli as admin_cli

    admin_cli.add_commands(sub)  # config check, reload, status, devices, alarms, events, ...
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
