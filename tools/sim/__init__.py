"""The simulator: virtual boards, the virtual air, the virtual home and its demo night."""
