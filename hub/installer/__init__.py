"""What an installer runs on the hub: the radio scan and device registration."""
