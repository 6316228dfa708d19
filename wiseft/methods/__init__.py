"""Robust fine-tuning methods, side by side; each is evaluated by the same sweep (:mod:`wiseft.sweep`).

- :mod:`~wiseft.methods.interpolate`: WiSE-FT's weight-space ensembling, as pure functions over state dicts.
"""
