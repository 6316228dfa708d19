"""Configuration: typed schemas, and the checks that run before any work.

- :mod:`~wiseft.config.schema`: dataclass schemas registered with Hydra's ConfigStore (a typo fails at compose
  time) and their conversion to :class:`~wiseft.config.schema.Settings`, which validates values.
- :mod:`~wiseft.config.preflight`: checks that need no torch, model or data, run first.
- :mod:`~wiseft.config.targets`: which ``_target_`` a config may instantiate.
- :mod:`~wiseft.config.secrets`: secrets kept out of everything a run writes.
"""
