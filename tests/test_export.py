"""Export: a classifier checkpoint becomes a plain open_clip state dict (+ head) that open_clip loads by itself."""

import open_clip
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from wiseft.errors import CheckpointError
from wiseft.io.checkpoints import save_weights
from wiseft.models.export import (
    HEAD_WEIGHTS,
    OPEN_CLIP_WEIGHTS,
    export_checkpoint,
    export_state,
    load_head,
    main,
    merge_into_clip,
)
from wiseft.models.factory import build_clip
from wiseft.models.zeroshot import zero_shot_classifier

CLASSES = ["blue", "green", "red"]


@pytest.fixture(scope="module")
def finetuned(tmp_path_factory):
    """A 'fine-tuned' tiny-vit classifier checkpoint whose model started from a pretrained weights file."""
    root = tmp_path_factory.mktemp("export")
    torch.manual_seed(0)
    original = build_clip("tiny-vit").model
    pretrained = root / "tiny_clip.safetensors"
    save_file({k: v.contiguous() for k, v in original.state_dict().items()}, str(pretrained))
    bundle = build_clip("tiny-vit", str(pretrained))
    classifier = zero_shot_classifier(bundle.model, bundle.tokenizer, CLASSES, ["a photo of {}."]).eval()
    with torch.no_grad():  # stands in for fine-tuning: every image-tower and head weight moves
        for p in classifier.parameters():
            p.add_(0.05 * torch.randn_like(p))
    model_meta = {"name": "tiny-vit", "pretrained": str(pretrained), "config_file": None,
                  "force_quick_gelu": False, "tokenizer_kwargs": {}, "cache_dir": None}
    ckpt = root / "finetuned.safetensors"
    save_weights(classifier.state_dict(), ckpt, {"model": model_meta, "classnames": CLASSES, "alpha": 1.0})
    return root, ckpt, classifier, pretrained


def test_exported_state_dict_loads_in_open_clip_and_gives_the_same_logits(finetuned):
    root, ckpt, classifier, pretrained = finetuned
    paths = export_checkpoint(ckpt, root / "out")
    assert paths["model"].name == OPEN_CLIP_WEIGHTS and paths["head"].name == HEAD_WEIGHTS
    model = open_clip.create_model("tiny-vit", pretrained=str(paths["model"])).eval()
    head, classnames = load_head(paths["head"])
    assert classnames == CLASSES
    images = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = classifier(images)
        torch.testing.assert_close(head(model.encode_image(images)), expected, rtol=1e-5, atol=1e-5)
        # The head is plain: normalised image features times its weights, plus its bias.
        weights = load_file(str(paths["head"]))
        manual = F.normalize(model.encode_image(images), dim=-1) @ weights["weight"].T + weights["bias"]
        torch.testing.assert_close(manual, expected, rtol=1e-5, atol=1e-5)
    # Text tower and logit_scale come from the original weights; the image tower is the fine-tuned one.
    exported, original = load_file(str(paths["model"])), load_file(str(pretrained))
    assert set(exported) == set(original)
    for key in original:
        if key.startswith("visual."):
            assert torch.equal(exported[key], classifier.state_dict()["image_encoder." + key[len("visual."):]])
        else:
            assert torch.equal(exported[key], original[key]), key
    assert not torch.equal(exported["visual.conv1.weight"], original["visual.conv1.weight"])


def test_export_folder_loads_with_local_dir(finetuned):
    root, ckpt, classifier, _ = finetuned
    export_checkpoint(ckpt, root / "local")
    model, _, _ = open_clip.create_model_and_transforms(f"local-dir:{root / 'local'}")
    head, _ = load_head(root / "local" / HEAD_WEIGHTS)
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(head(model.eval().encode_image(images)), classifier(images), rtol=1e-5,
                                   atol=1e-5)


def test_export_needs_the_original_weights_for_the_text_tower(finetuned, tmp_path):
    _, _, classifier, pretrained = finetuned
    meta = {"model": {"name": "tiny-vit", "pretrained": None}, "classnames": CLASSES}
    with pytest.raises(CheckpointError, match="randomly initialised"):
        export_state(classifier.state_dict(), meta, tmp_path)
    assert export_state(classifier.state_dict(), meta, tmp_path, pretrained=str(pretrained))["model"].is_file()


def test_merge_names_a_mismatched_key():
    clip = {"visual.w": torch.zeros(2), "logit_scale": torch.ones(())}
    with pytest.raises(CheckpointError, match=r"key 'image_encoder\.w' is missing"):
        merge_into_clip({"image_encoder.v": torch.zeros(2)}, clip)
    with pytest.raises(CheckpointError, match=r"'image_encoder.w' has shape \(3,\)"):
        merge_into_clip({"image_encoder.w": torch.zeros(3)}, clip)


def test_cli_reports_a_missing_checkpoint(tmp_path, capsys):
    assert main([str(tmp_path / "nope.safetensors"), str(tmp_path / "out")]) == 2
    assert "does not exist" in capsys.readouterr().err
