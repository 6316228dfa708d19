"""Every config group composes, and every `_target_` instantiates (catches renamed targets)."""

from pathlib import Path

import hydra
import lightning as L
import pytest
import torch
from omegaconf import open_dict

from tests.conftest import CONF_DIR, compose_cfg
from wiseft.config.schema import to_settings
from wiseft.errors import ConfigError

GROUPS = ("model", "data", "finetune", "wiseft", "trainer", "logger", "callbacks", "experiment")


def _options(group: str) -> list[str]:
    return sorted(p.stem for p in (Path(CONF_DIR) / group).glob("*.yaml"))


def _compose(tmp_path, overrides):
    cfg = compose_cfg(overrides)
    with open_dict(cfg):
        cfg.paths.output_dir = str(tmp_path)
        cfg.paths.data_dir = str(tmp_path / "data")
    return cfg


@pytest.mark.parametrize("group,option", [(g, o) for g in GROUPS for o in _options(g)])
def test_every_option_composes_and_validates(tmp_path, group, option):
    overrides = [f"{group}={option}"]
    if not torch.cuda.is_available():
        overrides.append("trainer.accelerator=cpu")  # GPU trainer configs still instantiate every other key
    cfg = _compose(tmp_path, overrides)
    settings = to_settings(cfg)
    assert settings.wiseft.alphas
    for key in ("callbacks", "logger"):
        for node in (cfg.get(key) or {}).values():
            assert hydra.utils.instantiate(node) is not None
    trainer = hydra.utils.instantiate(cfg.trainer, logger=False, enable_checkpointing=False,
                                      default_root_dir=str(tmp_path))
    assert isinstance(trainer, L.Trainer)


def test_names_others_rely_on_exist(tmp_path):
    cfg = _compose(tmp_path, ["seed=3", "wiseft.alphas=[0.0,1.0]", "finetune.lr=1e-5", "finetune.epochs=2",
                              "trainer.max_steps=5", "data.batch_size=4", "logger=csv"])
    assert (cfg.seed, cfg.finetune.lr, cfg.finetune.epochs, cfg.trainer.max_steps, cfg.data.batch_size) == (
        3, 1e-5, 2, 5, 4)
    assert cfg.trainer.max_epochs == 2 and list(cfg.logger) == ["csv"]


@pytest.mark.parametrize("override", ["finetune.lrr=1e-5", "finetune.lr=fast", "wiseft.alpha=[0.5]",
                                      "data.batch_size=big"])
def test_typo_or_wrong_type_fails_at_compose_time(override):
    from hydra.errors import ConfigCompositionException

    with pytest.raises(ConfigCompositionException, match=override.split("=")[0].replace(".", r"\.")):
        compose_cfg([override])


@pytest.mark.parametrize("override,message", [
    ("wiseft.alphas=[0.0,1.5]", "wiseft.alphas: alpha 1.5 is outside [0, 1]"),
    ("wiseft.alphas=[]", "wiseft.alphas: the alpha grid is empty"),
    ("wiseft.alphas=[0.5,0.2]", "wiseft.alphas: the grid must be strictly increasing, got 0.5 then 0.2"),
    ("wiseft.alphas=[0.5,0.5]", "wiseft.alphas: the grid must be strictly increasing, got 0.5 then 0.5"),
    ("finetune.lr=0", "finetune.lr: must be positive, got 0.0"),
    ("finetune.lr=-1e-4", "finetune.lr: must be positive, got -0.0001"),
    ("finetune.epochs=0", "finetune.epochs: must be positive, got 0"),
    ("data.batch_size=0", "data.batch_size: must be positive, got 0"),
    ("finetune.mode=full", "finetune.mode: must be one of ('e2e', 'linear'), got 'full'"),
])
def test_bad_values_fail_with_one_line_naming_the_key(tmp_path, override, message):
    cfg = _compose(tmp_path, [override])
    with pytest.raises(ConfigError) as info:
        to_settings(cfg)
    assert message in str(info.value)
    assert "\n" not in str(info.value)
