"""Running a job reliably: processes, resuming, pre-emption, guards and progress.

- :mod:`~wiseft.runtime.launch`: DDP child processes started from the job's resolved config (Hydra-safe).
- :mod:`~wiseft.runtime.distributed`: unpadded evaluation shards and summed counts (exact under DDP).
- :mod:`~wiseft.runtime.resume`: which checkpoint a relaunched run continues from, and whether it may.
- :mod:`~wiseft.runtime.exact_resume`: the resumable training loader and per-step seeds (bit-exact resume).
- :mod:`~wiseft.runtime.preemption`: a checkpoint on SIGTERM and at the end of training.
- :mod:`~wiseft.runtime.guards`: stop on a non-finite loss or gradient.
- :mod:`~wiseft.runtime.progress_bars`: rich progress bars outside Lightning's fit loop.
"""
