"""Security: weight files never run code, configs only instantiate allowed targets, secrets are never written."""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from tests.conftest import compose_cfg, tiny_cfg
from tests.reliability_helpers import cli_args, error_line, files_under, make_data, run_cli
from wiseft.config.preflight import report_and_exit
from wiseft.config.secrets import REDACTED, redact, redact_text
from wiseft.config.targets import check_targets
from wiseft.errors import CheckpointError, ConfigError
from wiseft.io.checkpoint_io import SafeCheckpointIO
from wiseft.pipeline.train import train


class _RunsCode:
    """Unpickling this runs ``touch <marker>``: what a malicious checkpoint does."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def malicious_checkpoint(path: Path, marker: Path) -> Path:
    torch.save({"state_dict": {"w": torch.zeros(2)}, "payload": _RunsCode(marker)}, path)
    return path


def refusal(what: str, path: Path) -> str:
    return (f"{what}: refusing to load '{path}': it names the Python object 'posix.system', and loading it could run "
            "code (only tensors and plain containers are read; convert it to safetensors)")


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return make_data(tmp_path_factory.mktemp("security"))


def test_cli_refuses_pretrained_weights_that_would_run_code(data, tmp_path):
    marker = tmp_path / "pwned"
    weights = malicious_checkpoint(tmp_path / "clip.pt", marker)
    out = tmp_path / "run"
    proc = run_cli(cli_args(data, out, [f"model.pretrained={weights}"]))
    assert proc.returncode == 2
    assert error_line(proc) == f"error: {refusal('model.pretrained', weights)}"
    assert not marker.exists()
    assert [p.name for p in files_under(out) if ".hydra" not in p.parts] == ["train.log"]  # nothing of ours


def test_resume_checkpoint_that_would_run_code_is_refused(data, tmp_path):
    marker = tmp_path / "pwned"
    ckpt = malicious_checkpoint(tmp_path / "last.ckpt", marker)
    out = tmp_path / "run"
    with pytest.raises(CheckpointError) as info:
        train(tiny_cfg(data, out, [f"ckpt_path={ckpt}"]))
    assert str(info.value) == refusal("ckpt_path", ckpt)
    assert not marker.exists() and files_under(out) == []


def test_a_pickle_dressed_up_as_torchscript_is_not_loaded_without_weights_only(data, tmp_path):
    # A torch.save file plus a `code/` entry used to pass for a TorchScript archive and be loaded with
    # weights_only=False, which unpickles it (torch only hands files with constants.pkl to torch.jit.load).
    import zipfile

    from wiseft.models.weights import is_torchscript_archive

    marker = tmp_path / "pwned"
    weights = malicious_checkpoint(tmp_path / "ViT-B-32.pt", marker)
    with zipfile.ZipFile(weights, "a") as archive:
        archive.writestr(f"{archive.namelist()[0].split('/')[0]}/code/__torch__/model.py", "")
    assert not is_torchscript_archive(weights)
    with pytest.raises(CheckpointError) as info:
        train(tiny_cfg(data, tmp_path / "run", [f"model.pretrained={weights}"]))
    assert str(info.value) == refusal("model.pretrained", weights)
    assert not marker.exists()


def test_lightning_checkpoint_io_never_unpickles_code_even_when_asked(tmp_path):
    marker = tmp_path / "pwned"
    ckpt = malicious_checkpoint(tmp_path / "x.ckpt", marker)
    with pytest.raises(CheckpointError, match="refusing to load"):
        SafeCheckpointIO().load_checkpoint(ckpt, weights_only=False)
    assert not marker.exists()


def test_model_folder_with_a_malicious_weights_file(data, tmp_path):
    folder = tmp_path / "model"
    folder.mkdir()
    config = json.loads((Path(__file__).parents[1] / "wiseft/models/configs/tiny-vit.json").read_text())
    (folder / "open_clip_config.json").write_text(json.dumps({"model_cfg": config}))
    marker = tmp_path / "pwned"
    weights = malicious_checkpoint(folder / "open_clip_pytorch_model.bin", marker)
    with pytest.raises(CheckpointError) as info:
        train(tiny_cfg(data, tmp_path / "run", [f"model.name=local-dir:{folder}"]))
    assert str(info.value) == refusal("model.name", weights)
    assert not marker.exists()


def test_target_allow_list_sees_nested_and_interpolated_targets():
    cfg = OmegaConf.create({
        "callbacks": {"ok": {"_target_": "lightning.pytorch.callbacks.ModelCheckpoint"},
                      "nested": {"plugins": [{"_target_": "${evil}"}]}},
        "evil": "builtins.exec",
    })
    with pytest.raises(ConfigError) as info:
        check_targets(cfg)
    assert str(info.value).startswith("callbacks.nested.plugins.0._target_: refusing to instantiate 'builtins.exec'")


@pytest.mark.parametrize("overrides", [
    [], ["logger=csv"], ["logger=none"], ["callbacks=none"], ["callbacks=model_checkpoint"], ["trainer=gpu"],
    ["trainer=cpu"], ["data=imagefolder", "model=tiny_random"],
])
def test_every_shipped_config_passes_the_allow_list(overrides):
    check_targets(compose_cfg(overrides))


def test_secrets_from_the_environment_are_never_written(data, tmp_path, monkeypatch):
    key = secrets.token_hex(20)
    monkeypatch.setenv("WANDB_API_KEY", key)
    monkeypatch.setenv("WANDB_SILENT", "true")
    out = tmp_path / "run"
    # A config that pulls the key in twice: under an innocent name, and under a secret-looking one.
    train(tiny_cfg(data, out, ["logger=wandb", "+notes=${oc.env:WANDB_API_KEY}",
                               "+tracking.api_key=${oc.env:WANDB_API_KEY}", "wiseft.alphas=[0.5]"]))
    written = files_under(out)
    assert any("wandb" in p.parts for p in written)  # the W&B offline run is part of what is scanned
    leaks = [p for p in written if key.encode() in p.read_bytes()]
    assert leaks == []
    saved = OmegaConf.load(out / "config.yaml")
    assert saved.notes == REDACTED and saved.tracking.api_key == REDACTED


def test_redaction_of_structures_and_error_messages(monkeypatch, capsys):
    monkeypatch.setenv("HF_TOKEN", "hf_abcdefghijklmnop")
    monkeypatch.setenv("TOKENIZERS_PARALLELISM", "false-positive-check")
    assert redact({"a": ["x hf_abcdefghijklmnop y"], "password": "short", "tokenizer_kwargs": {"p": 1}}) == {
        "a": [f"x {REDACTED} y"], "password": REDACTED, "tokenizer_kwargs": {"p": 1}}
    assert redact_text("false-positive-check") == "false-positive-check"
    with pytest.raises(SystemExit) as info:
        report_and_exit(ConfigError("data.root: bad value 'hf_abcdefghijklmnop'"))
    assert info.value.code == 2
    assert capsys.readouterr().err == f"error: data.root: bad value '{REDACTED}'\n"
