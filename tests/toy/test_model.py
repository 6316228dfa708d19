"""The shipped toy CLIP: config, weights file and zero-shot accuracy through open_clip's own code paths."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import open_clip
import pytest
import torch
import torch.nn.functional as F
from safetensors import safe_open

from wiseft.toy.domains import SHIFT_DOMAINS, WEB
from wiseft.toy.model import (
    CONFIG_PATH,
    MODEL_NAME,
    WEIGHTS_PATH,
    create_toy_model,
    eval_sets,
    register_toy_config,
    toy_tokenizer,
    zero_shot_accuracies,
)
from wiseft.toy.vocab import CLASSNAMES, TEMPLATES


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    return create_toy_model()


def test_weights_file_is_small_fp16_open_clip_state_dict() -> None:
    assert WEIGHTS_PATH.stat().st_size < 5 * 2**20
    with safe_open(str(WEIGHTS_PATH), framework="pt") as f:
        keys = set(f.keys())
        assert f.get_tensor("logit_scale").dtype == torch.float16
    register_toy_config()
    fresh = open_clip.create_model(MODEL_NAME)
    assert keys == set(fresh.state_dict())


def test_loads_through_open_clip_as_fp32(model: torch.nn.Module) -> None:
    register_toy_config()
    built, _, _ = open_clip.create_model_and_transforms(MODEL_NAME, pretrained=str(WEIGHTS_PATH))
    assert all(p.dtype == torch.float32 for p in built.parameters())
    with safe_open(str(WEIGHTS_PATH), framework="pt") as f:
        stored = f.get_tensor("text_projection")
    assert torch.equal(built.state_dict()["text_projection"], stored.float())
    assert open_clip.get_model_preprocess_cfg(built)["size"] == (32, 32)
    x = torch.randn(2, 3, 32, 32)
    assert model.visual(x).shape == (2, model.text_projection.shape[1])


def test_config_is_registered_by_the_package_config_folder() -> None:
    assert CONFIG_PATH.parent.name == "configs" and CONFIG_PATH.stem == MODEL_NAME


def test_zero_shot_head_matches_real_clip_recipe(model: torch.nn.Module) -> None:
    tokenizer = toy_tokenizer()
    head = open_clip.build_zero_shot_classifier(model, tokenizer, CLASSNAMES, TEMPLATES)
    assert head.shape == (model.text_projection.shape[1], len(CLASSNAMES))
    assert torch.allclose(head.norm(dim=0), torch.ones(len(CLASSNAMES)), atol=1e-5)
    # Distinct directions, except that web captions mix up the confusable pairs on purpose, which pulls each pair's
    # prompts close together (that confusion is what fine-tuning on clean labels fixes).
    sims = head.T @ head
    pairs = {frozenset(p) for p in WEB.confusable}
    for i, a in enumerate(CLASSNAMES):
        for j, b in enumerate(CLASSNAMES[:i]):
            assert sims[i, j] < (0.9995 if frozenset((a, b)) in pairs else 0.9), (a, b, float(sims[i, j]))
    logits = model.logit_scale.exp() * F.normalize(model.visual(torch.zeros(1, 3, 32, 32)), dim=-1) @ head
    assert logits.shape == (1, len(CLASSNAMES))


def test_zero_shot_beats_chance_on_every_kind_of_domain(model: torch.nn.Module, tiny_world: Path) -> None:
    sets = eval_sets(tiny_world)
    accs = zero_shot_accuracies(model, sets)
    assert set(accs) == {"reference/val", "reference/test", *SHIFT_DOMAINS}
    chance = 100 / len(CLASSNAMES)
    # The tiny world has only 20-40 images per set, so the bars are on pooled sets (full-scale numbers are in the
    # report: every domain is above 30%).
    sizes = {k: len(y) for k, (_, y) in sets.items()}
    pooled = lambda keys: sum(accs[k] * sizes[k] for k in keys) / sum(sizes[k] for k in keys)  # noqa: E731
    assert pooled(["reference/val", "reference/test"]) > 3 * chance, accs
    assert pooled(SHIFT_DOMAINS) > 3 * chance, accs
    assert pooled(["sketch", "rendition"]) > 4 * chance, accs


def test_fast_input_path_matches_open_clip_eval_transform(tiny_world: Path) -> None:
    from PIL import Image

    from wiseft.toy.model import normalisation, to_input

    register_toy_config()
    model, _, preprocess = open_clip.create_model_and_transforms(MODEL_NAME)
    mean, std = normalisation(model)
    path = next((tiny_world / "sketch" / "heart").glob("*.png"))
    with Image.open(path) as img:
        expected = preprocess(img)
        fast = to_input(torch.from_numpy(np.array(img.convert("RGB")))[None], mean, std)[0]
    assert torch.allclose(fast, expected, atol=1e-6)
