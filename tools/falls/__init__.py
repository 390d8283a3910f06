"""The fall detector evaluated on recorded falls and daily activities."""
