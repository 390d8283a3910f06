"""Admin: how people and systemd see and steer the running hub."""
