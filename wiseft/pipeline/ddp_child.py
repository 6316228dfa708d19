"""Entry point of a DDP child process: ``python -m wiseft.pipeline.ddp_child <run>/.ddp/config.yaml``.

:class:`wiseft.runtime.launch.JobConfigLauncher` starts ranks 1..N-1 with this command, so every rank runs the
job's resolved config (see that module for why not the command line).
"""

from __future__ import annotations

import logging
import os
import sys

from omegaconf import OmegaConf


def main(argv: list[str] | None = None) -> int:
    """Entry point of a child process: ``python -m wiseft.pipeline.ddp_child <resolved config>``."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m wiseft.pipeline.ddp_child CONFIG.yaml", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.WARNING, format=f"[rank {os.environ.get('RANK', '?')}] %(message)s")
    import wiseft.config.schema  # noqa: F401  (registers the resolvers the config may still name)
    from wiseft.errors import WiseftError
    from wiseft.pipeline.train import train

    cfg = OmegaConf.load(args[0])
    try:
        train(cfg)
    except (WiseftError, PermissionError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
