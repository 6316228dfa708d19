"""wiseft: robust fine-tuning of zero-shot CLIP models (WiSE-FT) with Lightning and Hydra."""

__version__ = "0.1.0"
