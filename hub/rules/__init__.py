"""Rules: reports in, outgoing messages out. Pure: time comes in as an argument.

`RuleEngine.on_report(report, now)` and `RuleEngine.tick(now)` return the messages to store;
timers are part of the engine's state, which `snapshot()` / `restore()` persist across restarts.
"""

from hub.rules.engine import RuleEngine
from hub.rules.outgoing import Outgoing, new_id

__all__ = ["Outgoing", "RuleEngine", "new_id"]
