"""The site's receipt key when the config names none: made once in the data dir.

The hub takes only receipts the response centre signs with the site's key
(protocols/MQTT.md). Verification is the default, so a hub without `[mqtt]
receipt_key_file` makes a key at first start, keeps it, and says where it is: the
admin gives it to the centre. Until the centre has it, receipts are refused (counted
and logged) and alarms are published again, never silently confirmed by whoever can
reach the broker.
"""

from __future__ import annotations

import logging
import os
import secrets
from dataclasses import replace
from pathlib import Path

from hub.config.settings import MqttSettings, read_receipt_key

log = logging.getLogger(__name__)

KEY_NAME = "receipt.key"


def ensure(settings: MqttSettings, data_dir: Path) -> MqttSettings:
    """`settings` with a receipt key file: the configured one, else data_dir/receipt.key
    (made 0600 if missing). Unchanged with receipts = "unsigned"."""
    if settings.receipt_key_file is not None or settings.receipts == "unsigned":
        return settings
    path = data_dir / KEY_NAME
    if not path.exists():
        data_dir.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(KEY_NAME + ".new")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, (secrets.token_hex(32) + "\n").encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)  # never a half-written key under the real name
        log.warning("MQTT: made this site's receipt key %s: give it to the response centre"
                    " (docs/DELIVERY.md); until it signs with it, every receipt is refused",
                    path)
    else:
        log.info("MQTT: receipts are verified with %s (made by this hub)", path)
    read_receipt_key(path)  # a damaged key is a clear error at start, not silent refusals
    return replace(settings, receipt_key_file=path)
