"""Decode: advert -> Report (identify, authenticate, decrypt, refuse replays)."""
