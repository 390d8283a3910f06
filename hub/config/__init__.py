"""Configuration: the hub's TOML files and device keys, checked."""
