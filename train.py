"""Fine-tune a zero-shot CLIP model and sweep WiSE-FT's alpha: ``python train.py [overrides]``."""

import sys

import hydra
from omegaconf import DictConfig

import wiseft.config  # noqa: F401  (registers the config schemas)
from wiseft.errors import WiseftError
from wiseft.pipeline import train


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float:
    """Hydra entry point; returns the sweep objective."""
    try:
        return train(cfg)
    except (WiseftError, PermissionError) as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
