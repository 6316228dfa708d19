"""Robust fine-tuning methods, side by side; each is evaluated by the same sweep (:mod:`wiseft.sweep`).

- :mod:`~wiseft.methods.interpolate`: WiSE-FT's weight-space ensembling, as pure functions over state dicts.
- :mod:`~wiseft.methods.fisher`: the Fisher-weighted merge (WiSE-FT's appendix) and the diagonal Fisher estimate.
- :mod:`~wiseft.methods.soups`: uniform and greedy model soups over several fine-tuned runs.
- :mod:`~wiseft.methods.model_stock`: Model Stock's per-layer ratio from the angle between two fine-tuned runs.
"""
