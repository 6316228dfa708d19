"""Data: the DataModule, dataset kinds and class projections.

- :mod:`~wiseft.data.datamodule`: reference train/val/test and named shift sets, with their loaders.
- :mod:`~wiseft.data.registry`: dataset kinds (``imagefolder``, ``csv``, ...): how a spec becomes a dataset.
- :mod:`~wiseft.data.datasets`: labelled datasets that know their class names and projection.
- :mod:`~wiseft.data.imagenet`, :mod:`~wiseft.data.toy`: ImageNet and its shifts; the built-in toy world.
- :mod:`~wiseft.data.projection`: scoring C reference classes on a dataset with fewer or coarser classes.
- :mod:`~wiseft.data.verify`: corrupt images found before any model is built.
- :mod:`~wiseft.data.feature_cache`, :mod:`~wiseft.data.features`: a frozen encoder's features, computed once
  and cached; the DataModule that serves them (``finetune=linear``).
"""
