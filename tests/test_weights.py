"""Pretrained weights: local files, ``local-dir:``, cached tags offline, failures, and the QuickGELU guard."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import open_clip
import pytest
import torch
from huggingface_hub import constants as hf_constants
from open_clip import pretrained as oc_pretrained
from open_clip.transformer import QuickGELU
from safetensors.torch import save_file

from wiseft.errors import ConfigError
from wiseft.models.factory import PACKAGE_MODEL_CONFIGS, build_clip, register_model_configs
from wiseft.models.weights import (
    check_activation,
    is_torchscript_archive,
    quick_gelu_for,
    quick_gelu_mismatch_is_an_error,
    resolve_weights,
)

FAKE_REPO = "wiseft-test/tiny-vit-fake"


@pytest.fixture
def offline(monkeypatch):
    """No network: huggingface_hub in offline mode, so any attempt to reach the hub raises at once."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)


@pytest.fixture
def online(monkeypatch):
    """Downloads allowed as far as our checks go (tests that use it must not actually download)."""
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", False)


@pytest.fixture(scope="module")
def tiny_state() -> dict[str, torch.Tensor]:
    """The state dict of a randomly initialised tiny-vit CLIP (the reference for round trips)."""
    register_model_configs(PACKAGE_MODEL_CONFIGS)
    torch.manual_seed(123)
    model = open_clip.create_model("tiny-vit")
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _assert_bit_exact(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    loaded = model.state_dict()
    assert set(loaded) == set(state)
    for key, value in state.items():
        assert loaded[key].dtype == value.dtype, key
        assert torch.equal(loaded[key], value), key


def _tiny_config() -> dict:
    return json.loads((PACKAGE_MODEL_CONFIGS / "tiny-vit.json").read_text())


def _hf_cache(cache: Path, state: dict[str, torch.Tensor], repo: str = FAKE_REPO) -> Path:
    """Lay out ``state`` as huggingface_hub's cache holds a downloaded ``open_clip_model.safetensors``."""
    commit = "0" * 40
    repo_dir = cache / f"models--{repo.replace('/', '--')}"
    (repo_dir / "refs").mkdir(parents=True)
    (repo_dir / "refs" / "main").write_text(commit)
    snapshot = repo_dir / "snapshots" / commit
    snapshot.mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in state.items()}, str(snapshot / "open_clip_model.safetensors"))
    return snapshot / "open_clip_model.safetensors"


@pytest.fixture
def fake_tags(monkeypatch):
    """Two pretrained tags for tiny-vit in open_clip's registry: one trained with QuickGELU, one with GELU."""
    def tag(quick_gelu: bool) -> dict:
        return {"url": "", "hf_hub": f"{FAKE_REPO}/", "mean": (0.5, 0.5, 0.5), "std": (0.25, 0.25, 0.25),
                "interpolation": "bilinear", "resize_mode": "squash", "quick_gelu": quick_gelu}

    register_model_configs(PACKAGE_MODEL_CONFIGS)
    monkeypatch.setitem(oc_pretrained._PRETRAINED, "tiny-vit", {"fake_qg": tag(True), "fake_gelu": tag(False)})


def _has_quick_gelu(model: torch.nn.Module) -> bool:
    return any(isinstance(m, QuickGELU) for m in model.modules())


@pytest.mark.parametrize("suffix", [".safetensors", ".pt"])
def test_local_weights_file_round_trips_bit_exactly(tmp_path, tiny_state, suffix):
    path = tmp_path / f"weights{suffix}"
    if suffix == ".safetensors":
        save_file({k: v.contiguous() for k, v in tiny_state.items()}, str(path))
    else:
        torch.save(tiny_state, path)
    torch.manual_seed(0)  # a different random init: only loading can make the weights equal
    bundle = build_clip("tiny-vit", str(path))
    _assert_bit_exact(bundle.model, tiny_state)


def test_local_dir_round_trips_bit_exactly(tmp_path, tiny_state):
    folder = tmp_path / "tiny-clip"
    folder.mkdir()
    config = {"model_cfg": _tiny_config(),
              "preprocess_cfg": {"mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5], "interpolation": "bicubic"}}
    (folder / "open_clip_config.json").write_text(json.dumps(config))
    save_file({k: v.contiguous() for k, v in tiny_state.items()}, str(folder / "open_clip_model.safetensors"))
    torch.manual_seed(0)
    bundle = build_clip(f"local-dir:{folder}")
    _assert_bit_exact(bundle.model, tiny_state)
    assert bundle.tokenizer(["a photo of a cat."]).shape == (1, 16)  # the folder's context length
    assert list(bundle.model.visual.preprocess_cfg["mean"]) == [0.5, 0.5, 0.5]


def test_local_dir_without_weights_or_with_a_tag_fails(tmp_path):
    folder = tmp_path / "no-weights"
    folder.mkdir()
    (folder / "open_clip_config.json").write_text(json.dumps({"model_cfg": _tiny_config()}))
    # open_clip itself only logs a warning and returns a randomly initialised model here.
    with pytest.raises(ConfigError, match="holds no weights file"):
        resolve_weights(f"local-dir:{folder}")
    with pytest.raises(ConfigError, match=r"model.pretrained: must be null"):
        resolve_weights(f"local-dir:{folder}", "openai")
    with pytest.raises(ConfigError, match=r"open_clip_config.json"):
        resolve_weights(f"local-dir:{tmp_path / 'absent'}")


def test_missing_weights_file_and_unknown_tag_fail(online):
    with pytest.raises(ConfigError, match=r"weights file 'nowhere/w.pt' does not exist"):
        resolve_weights("tiny-vit", "nowhere/w.pt")
    with pytest.raises(ConfigError, match=r"'openia' is neither a pretrained tag of 'ViT-B-32'.*openai"):
        resolve_weights("ViT-B-32", "openia")
    with pytest.raises(ConfigError, match="unknown open_clip model 'ViT-B-33'"):
        resolve_weights("ViT-B-33", "openai")


def test_cached_tag_builds_offline_with_its_preprocessing(tmp_path, tiny_state, fake_tags, offline):
    path = _hf_cache(tmp_path / "hub", tiny_state)
    source = resolve_weights("tiny-vit", "fake_gelu", cache_dir=str(tmp_path / "hub"))
    assert source.checkpoint == str(path)
    bundle = build_clip("tiny-vit", "fake_gelu", cache_dir=str(tmp_path / "hub"))
    _assert_bit_exact(bundle.model, tiny_state)
    normalize = bundle.eval_transform.transforms[-1]
    assert tuple(normalize.mean) == (0.5, 0.5, 0.5) and tuple(normalize.std) == (0.25, 0.25, 0.25)
    assert not _has_quick_gelu(bundle.model)


def test_missing_tag_offline_fails_at_once_with_one_line(tmp_path, offline):
    with pytest.raises(ConfigError) as err:
        resolve_weights("ViT-B-32", "openai", cache_dir=str(tmp_path / "empty"))
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith("model.pretrained: weights 'openai' of 'ViT-B-32' are not available offline")
    assert "HF_HUB_OFFLINE is set" in message and "set model.pretrained=/path/to/weights.safetensors" in message
    assert not (tmp_path / "empty").exists()


def test_downloads_off_never_calls_the_downloader(tmp_path, online, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a download was attempted")

    monkeypatch.setattr(oc_pretrained, "download_pretrained_from_hf", refuse)
    monkeypatch.setattr(oc_pretrained, "download_pretrained_from_url", refuse)
    with pytest.raises(ConfigError, match=r"downloads are off \(model.allow_download=false\)"):
        resolve_weights("ViT-B-32", "openai", cache_dir=str(tmp_path), allow_download=False)
    # The cheap first check (before the data is looked at) downloads nothing even when downloads are allowed.
    source = resolve_weights("ViT-B-32", "openai", cache_dir=str(tmp_path), fetch=False)
    assert source.checkpoint is None and source.quick_gelu is True


def test_failed_download_is_one_line_and_leaves_no_file(tmp_path, online, monkeypatch):
    def no_network(*args, **kwargs):
        raise ConnectionError("Failed to resolve 'huggingface.co'\n(a long traceback-like tail)")

    monkeypatch.setattr(oc_pretrained, "download_pretrained_from_hf", no_network)
    with pytest.raises(ConfigError) as err:
        resolve_weights("ViT-B-32", "openai", cache_dir=str(tmp_path / "hub"))
    assert "\n" not in str(err.value)
    assert "the download failed (ConnectionError: Failed to resolve 'huggingface.co')" in str(err.value)

    # URL downloads (no hf_hub entry): a download that dies half-way leaves nothing under the final name.
    def partial_then_fail(url, cache_dir=None):
        Path(cache_dir, Path(url).name).write_bytes(b"half a file")
        raise ConnectionError("connection reset")

    monkeypatch.setattr(oc_pretrained, "has_hf_hub", lambda necessary=False: False)
    monkeypatch.setattr(oc_pretrained, "download_pretrained_from_url", partial_then_fail)
    with pytest.raises(ConfigError, match="connection reset"):
        resolve_weights("ViT-B-32", "openai", cache_dir=str(tmp_path / "urls"))
    assert list((tmp_path / "urls").iterdir()) == []


def test_pipeline_stops_before_writing_anything_when_weights_are_missing(tmp_path, image_root, offline):
    from tests.conftest import tiny_cfg
    from wiseft.pipeline.train import train

    out = tmp_path / "out"
    cfg = tiny_cfg(image_root, out, ["model.name=ViT-B-32", "model.pretrained=openai",
                                     f"model.cache_dir={tmp_path / 'cache'}"])
    with pytest.raises(ConfigError, match="not available offline"):
        train(cfg)
    assert not out.exists()


# --- QuickGELU -------------------------------------------------------------------------------------------------


def test_openai_tags_get_quick_gelu_on_the_plain_architecture(online, caplog):
    # open_clip's own create_model would build GELU here and only warn.
    with caplog.at_level(logging.WARNING, logger="wiseft.models.weights"):
        source = resolve_weights("ViT-B-32", "openai", fetch=False)
    assert source.quick_gelu is True
    assert "trained with QuickGELU" in caplog.text
    for name in ("ViT-B-32-quickgelu", "ViT-B-16", "ViT-L-14", "ViT-L-14-336", "ViT-L-14-336-quickgelu"):
        assert resolve_weights(name, "openai", fetch=False).quick_gelu is True, name
    assert resolve_weights("ViT-B/32", "openai", fetch=False).name == "ViT-B-32"
    assert resolve_weights("ViT-B-32", "laion2b_s34b_b79k", fetch=False).quick_gelu is False


def test_quick_gelu_contradicting_the_weights_is_an_error(online):
    with pytest.raises(ConfigError, match=r"model.force_quick_gelu: .*trained with plain GELU"):
        resolve_weights("ViT-B-32", "laion2b_s34b_b79k", force_quick_gelu=True, fetch=False)
    with pytest.raises(ConfigError, match=r"model.name: .*trained with plain GELU"):
        quick_gelu_for("ViT-B-32-quickgelu", False, False, "weights")
    assert quick_gelu_for("ViT-B-32", None, False, "a file") is False
    assert quick_gelu_for("ViT-B-32", None, True, "a file") is True


def test_built_model_follows_the_tag(tmp_path, tiny_state, fake_tags, offline):
    _hf_cache(tmp_path / "hub", tiny_state)
    cache = str(tmp_path / "hub")
    # The hazard: open_clip alone builds plain GELU for a QuickGELU tag and only warns.
    with pytest.warns(UserWarning, match="QuickGELU mismatch"):
        plain = open_clip.create_model("tiny-vit", pretrained="fake_qg", cache_dir=cache)
    assert not _has_quick_gelu(plain)
    # Here: same call, QuickGELU, same weights bit for bit.
    bundle = build_clip("tiny-vit", "fake_qg", cache_dir=cache)
    assert _has_quick_gelu(bundle.model)
    _assert_bit_exact(bundle.model, tiny_state)
    with pytest.raises(ConfigError, match="trained with plain GELU"):
        build_clip("tiny-vit", "fake_gelu", cache_dir=cache, force_quick_gelu=True)


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:FutureWarning")
@pytest.mark.filterwarnings("ignore:'torch.load' received a zip file that looks like a TorchScript archive")
@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:FutureWarning")
def test_openai_style_torchscript_file_loads_with_quick_gelu(tmp_path, tiny_state):
    # OpenAI's original releases (ViT-B-32.pt...) are TorchScript archives of QuickGELU models.
    model = open_clip.create_model("tiny-vit", force_quick_gelu=True)
    model.load_state_dict(tiny_state)
    # OpenAI's archives keep the text attention mask out of the state dict; so does a plain attribute.
    model.attn_mask = model._buffers.pop("attn_mask")
    jit_path = tmp_path / "tiny-vit-openai-style.pt"
    torch.jit.script(model).save(str(jit_path))
    torch.save(tiny_state, tmp_path / "plain.pt")
    save_file({"w": torch.zeros(1)}, str(tmp_path / "w.safetensors"))
    assert is_torchscript_archive(jit_path)
    assert not is_torchscript_archive(tmp_path / "plain.pt")
    assert not is_torchscript_archive(tmp_path / "w.safetensors")
    assert resolve_weights("tiny-vit", str(tmp_path / "plain.pt")).quick_gelu is False
    torch.manual_seed(0)
    bundle = build_clip("tiny-vit", str(jit_path))  # the plain architecture: QuickGELU comes from the file's kind
    assert _has_quick_gelu(bundle.model)
    _assert_bit_exact(bundle.model, tiny_state)


def test_open_clip_mismatch_warning_becomes_an_error():
    with pytest.raises(ConfigError, match="QuickGELU mismatch"), quick_gelu_mismatch_is_an_error():
        import warnings

        warnings.warn("QuickGELU mismatch between final model config (quick_gelu=False) and pretrained tag 'openai' "
                      "(quick_gelu=True).", UserWarning, stacklevel=1)
    with pytest.raises(RuntimeError, match="without QuickGELU"):
        check_activation(torch.nn.Sequential(torch.nn.GELU()), True, "m")
    check_activation(torch.nn.Sequential(QuickGELU()), True, "m")
