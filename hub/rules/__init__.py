"""Rules: reports in, outgoing messages out. Pure: time comes in as an argument.

`RuleEngine.on_report(report, now)` and `RuleEngine.tick(now)` (engine.py) return the messages
to store (outgoing.py); timers are part of the engine's state, which `snapshot()` /
`restore()` persist across restarts (store.py).
"""
