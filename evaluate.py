"""Evaluate and interpolate given checkpoints, no training: ``python evaluate.py finetuned=CKPT [zeroshot=CKPT]``."""

import hydra
from omegaconf import DictConfig

import wiseft.config.schema  # noqa: F401  (registers the config schemas)
from wiseft.config.preflight import report_and_exit
from wiseft.errors import WiseftError
from wiseft.pipeline.evaluate import evaluate_checkpoints


@hydra.main(version_base="1.3", config_path="conf", config_name="evaluate")
def main(cfg: DictConfig) -> float:
    """Hydra entry point; returns the sweep objective (as ``train.py`` does)."""
    try:
        return evaluate_checkpoints(cfg)
    except (WiseftError, PermissionError) as err:
        report_and_exit(err)


if __name__ == "__main__":
    main()
