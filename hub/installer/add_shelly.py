"""Register an off-the-shelf Shelly BLU sensor with the hub: `make shelly` runs this.

    python -m hub.installer.add_shelly --config /etc/tryggheim --model button1 \\
        --mac B4:35:22:F5:3D:A4 --id pendant-2 --room bedroom   # bindkey on stdin

Nothing is flashed: the sensor keeps Shelly's firmware. Turn on its encryption in the Shelly
app first; the app shows the bindkey (32 hex digits). The hub's config and keys file are
written exactly as `make flash` writes them (hub/installer/provision.py: checked with the hub's own
loader, all or nothing, key file 0600, audited with the key's fingerprint only, the counter
restarted when the key changed). The bindkey is read from stdin or a prompt, never from the
command line, where other users could read it in the process list.
"""

from __future__ import annotations

import argparse
import getpass
import sys

from hub.config.models import MODELS, model_named
from hub.installer.provision import LocalHub, ProvisionError, Registration


def normalise_bindkey(text: str) -> str:
    """The bindkey as the Shelly app shows it (any case, maybe with spaces or colons)."""
    key = "".join(c for c in text.strip() if c not in " :-").lower()
    if len(key) != 32 or any(c not in "0123456789abcdef" for c in key):
        raise ProvisionError("bindkey: expected 32 hex digits (the encryption key the Shelly"
                             " app shows once encryption is on)")
    return key


def registration(model: str, mac: str, device_id: str, bindkey: str, room: str = "",
                 heartbeat_s: int | None = None) -> Registration:
    spec = model_named(model)
    if spec is None:
        raise ProvisionError(f"model {model!r}: must be one of {', '.join(MODELS)}"
                             " (or button1, door-window, motion)")
    return Registration(device_id, spec.role, mac.upper(), normalise_bindkey(bindkey), room,
                        heartbeat_s, model=spec.name)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m hub.installer.add_shelly", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", required=True, help="the hub's config directory or file")
    p.add_argument("--model", required=True,
                   help="button1 (alarm button), door-window (door) or motion (pir)")
    p.add_argument("--mac", required=True, help="the sensor's address, AA:BB:CC:DD:EE:FF")
    p.add_argument("--id", required=True, help="device id, e.g. pendant-2")
    p.add_argument("--room", default="")
    p.add_argument("--heartbeat-s", type=int,
                   help="seconds between the sensor's beacon adverts (default: the role's)")
    args = p.parse_args(argv)
    try:
        if sys.stdin.isatty():
            text = getpass.getpass("Bindkey (32 hex digits, from the Shelly app): ")
        else:
            text = sys.stdin.readline()
        reg = registration(args.model, args.mac, args.id, text, args.room, args.heartbeat_s)
        LocalHub(args.config).register(reg)
    except (ProvisionError, ValueError) as e:
        print(f"add_shelly: {e}", file=sys.stderr)
        return 2
    spec = MODELS[reg.model]
    print(f"registered {reg.id}: {spec.product} as a {reg.role} ({reg.mac}). Reload the hub"
          " (tryggheim reload) to start using it.")
    if reg.role == "pendant":
        print("Note: a Shelly button raises the alarm but cannot show 'help is coming'.")
    print("Turn on beacon mode in the Shelly app, or the hub reports the sensor silent.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
