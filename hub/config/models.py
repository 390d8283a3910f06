"""Off-the-shelf devices a [[device]] may name as its `model` (devices.toml or hub.toml).

Today: Shelly BLU sensors, each playing one Tryggheim role. How their adverts are read is
hub/decode/shelly.py; what the installer types for `make shelly MODEL=...` is an alias here.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Model:
    name: str  # what the installer types: `--model button1`
    product: str  # Shelly's name for it
    short_name: str  # the local name it advertises (SBBT-002C, ...)
    role: str  # the Tryggheim role it plays


MODELS = {
    m.name: m for m in (
        Model("shelly-blu-button1", "Shelly BLU Button1", "SBBT-002C", "pendant"),
        Model("shelly-blu-door-window", "Shelly BLU Door/Window", "SBDW-002C", "door"),
        Model("shelly-blu-motion", "Shelly BLU Motion", "SBMO-003Z", "pir"),
    )
}
# What an installer may type for --model, besides the full name.
ALIASES = {"button1": "shelly-blu-button1", "button": "shelly-blu-button1",
           "door-window": "shelly-blu-door-window", "door": "shelly-blu-door-window",
           "motion": "shelly-blu-motion", "SBBT-002C": "shelly-blu-button1",
           "SBDW-002C": "shelly-blu-door-window", "SBMO-003Z": "shelly-blu-motion"}


def model_named(name: str) -> Model | None:
    return MODELS.get(ALIASES.get(name, name))


def note(device: object) -> str | None:
    """What `tryggheim devices` says about an off-the-shelf sensor; None for our own."""
    spec = MODELS.get(str(getattr(device, "model", "") or ""))
    if spec is None:
        return None
    if spec.role == "pendant":
        return f"{spec.product}: alarms only, no 'help is coming' feedback on the button"
    return spec.product
