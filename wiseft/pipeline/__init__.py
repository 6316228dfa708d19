"""The jobs: ``train.py`` and ``evaluate.py`` are thin Hydra entry points over these plain functions.

- :mod:`~wiseft.pipeline.train`: ``train(cfg)``: checks, data, model, fit, then the sweep writes the outputs.
- :mod:`~wiseft.pipeline.evaluate`: ``evaluate_checkpoints(cfg)``: the sweep over given checkpoints.
- :mod:`~wiseft.pipeline.ddp_child`: the entry point of DDP child processes.
"""
