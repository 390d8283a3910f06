"""Radio: where adverts enter the hub (the Scanner interface and its sources)."""
