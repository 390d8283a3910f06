"""Installer tools: flashing and provisioning devices."""
