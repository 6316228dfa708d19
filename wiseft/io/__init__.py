"""Files: atomic writes, safe loading and safetensors checkpoints.

- :mod:`~wiseft.io.atomic`: write to a temporary file, sync, rename; a crash never leaves half a file.
- :mod:`~wiseft.io.safeload`: weight files read without running code from them.
- :mod:`~wiseft.io.checkpoints`: safetensors checkpoints of a classifier, with its model config as metadata.
- :mod:`~wiseft.io.checkpoint_io`: Lightning's checkpoint I/O, atomic and safe.
"""
