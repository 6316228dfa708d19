"""Models: open_clip factory, zero-shot head, image classifier and the LightningModule.

- :mod:`~wiseft.models.factory`, :mod:`~wiseft.models.weights`: open_clip models, transforms and tokenizers from
  typed arguments; pretrained weights resolved offline-first.
- :mod:`~wiseft.models.zeroshot`: the zero-shot head from class-name prompts.
- :mod:`~wiseft.models.classifier`: image encoder + linear head on L2-normalised features.
- :mod:`~wiseft.models.module`, :mod:`~wiseft.models.linear_probe`: the LightningModules (E2E, LC on features).
- :mod:`~wiseft.models.performance`: activation checkpointing and ``torch.compile``.
- :mod:`~wiseft.models.export`: a checkpoint as a plain open_clip model plus its head.
"""
