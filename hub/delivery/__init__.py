"""Delivery: what leaves the hub (outbox, MQTT link, receipts, routing, acknowledgements)."""
