"""Fine-tune a zero-shot CLIP model and sweep WiSE-FT's alpha: ``python train.py [overrides]``."""

import signal
import sys

import hydra
from omegaconf import DictConfig

import wiseft.config.schema  # noqa: F401  (registers the config schemas)
from wiseft.config.preflight import preflight, report_and_exit
from wiseft.errors import RunInterrupted, WiseftError


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float:
    """Hydra entry point; returns the sweep objective."""
    try:
        preflight(cfg)  # bad config values fail here, before torch is even imported
        from wiseft.pipeline.train import train

        return train(cfg)
    except RunInterrupted as err:
        print(f"interrupted: {err}", file=sys.stderr)
        sys.exit(128 + signal.SIGTERM)
    except (WiseftError, PermissionError) as err:
        report_and_exit(err)


if __name__ == "__main__":
    main()
