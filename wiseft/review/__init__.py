"""A run's outputs and their review: result files, effective robustness, figures, sweep reports and W&B.

- :mod:`~wiseft.review.results`: ``results.{csv,jsonl}``, ``summary.json`` and ``curve.png`` of one run.
- :mod:`~wiseft.review.robustness`: effective robustness against logit-linear baselines (Taori et al., 2020).
- :mod:`~wiseft.review.plots`: robustness-vs-accuracy figures on logit axes.
- :mod:`~wiseft.review.multirun`: a Hydra multirun's jobs and their results.
- :mod:`~wiseft.review.report`: one table and one figure for a whole sweep (``python -m wiseft.review.report``).
- :mod:`~wiseft.review.wandb`: the resilient W&B logger and the sweep sent to it.
- :mod:`~wiseft.review.wandb_offline`: offline W&B runs read without a server.
"""
