"""Lightning callbacks."""

from wiseft.callbacks.sweep import WiSEFTSweep

__all__ = ["WiSEFTSweep"]
