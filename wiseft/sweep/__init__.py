"""The post-fit sweep: every alpha evaluated on every dataset, summarised and written.

- :mod:`~wiseft.sweep.callback`: the Lightning callback that runs the sweep after fitting and writes the outputs.
- :mod:`~wiseft.sweep.engine`: the weight-space sweep at its compute floor (each image decoded once).
- :mod:`~wiseft.sweep.logits`: the linear-classifier sweep, from two head evaluations whatever the grid.
- :mod:`~wiseft.sweep.progress`: finished evaluation sets recorded, so a relaunched sweep skips them.
- :mod:`~wiseft.sweep.summary`: result rows, averages, and the chosen and optimal alphas.
- :mod:`~wiseft.sweep.evaluate`: top-1 of one model over several datasets (the sweep's reference).
"""
