"""``finetune=flyp``: contrastive fine-tuning of both towers, the head rebuilt from the text tower at every alpha."""

import json
from types import SimpleNamespace

import open_clip
import pytest
import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_dir
from omegaconf import open_dict

from tests.conftest import CLASSES, CONF_DIR, tiny_cfg
from tests.sweep_helpers import make_data
from wiseft.config.schema import FinetuneConfig, to_settings
from wiseft.data.datamodule import WiSEFTDataModule
from wiseft.io.checkpoints import check_matches, load_weights
from wiseft.methods.interpolate import interpolate, interpolate_into
from wiseft.methods.text_head import HeadFromText, weight_mix
from wiseft.models.classifier import ClassificationHead, ImageClassifier
from wiseft.models.export import export_checkpoint, load_head
from wiseft.models.factory import build_clip
from wiseft.models.flyp import FLYPModule
from wiseft.models.text_head import TextHeadClassifier, caption
from wiseft.models.zeroshot import zero_shot_weights
from wiseft.pipeline.evaluate import evaluate_checkpoints
from wiseft.pipeline.train import train
from wiseft.review.results import read_curves
from wiseft.sweep.evaluate import evaluate

TEMPLATES = ["a {} image", "a photo of a {}", "{}"]
TEMPLATES_OVERRIDE = f"data.templates=[{','.join(repr(t) for t in TEMPLATES)}]"


def _classifier(seed: int = 0) -> TextHeadClassifier:
    torch.manual_seed(seed)
    bundle = build_clip("tiny-vit")
    return TextHeadClassifier.from_clip(bundle.model, bundle.tokenizer, CLASSES, TEMPLATES)


def _state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def test_captions_are_class_prompts_with_templates_drawn_per_image():
    module = FLYPModule(_classifier(), FinetuneConfig(mode="flyp"))
    labels = torch.tensor([0, 1, 2] * 100)
    torch.manual_seed(0)
    tokens = module.sample_captions(labels)
    tokenizer = module.model.tokenizer
    drawn = set()
    for label, row in zip(labels.tolist(), tokens, strict=True):
        options = tokenizer([caption(t, CLASSES[label]) for t in TEMPLATES])
        matches = [j for j, option in enumerate(options) if torch.equal(option, row)]
        assert matches, "a caption that is not a prompt of the image's class"
        drawn.add(matches[0])
    assert drawn == {0, 1, 2}  # every template is drawn, not one fixed prompt
    torch.manual_seed(0)
    assert torch.equal(module.sample_captions(labels), tokens)  # the step seed decides the draw


def test_training_loss_is_open_clips_clip_loss_on_the_batchs_captions():
    module = FLYPModule(_classifier(), FinetuneConfig(mode="flyp"))
    module.log = lambda *args, **kwargs: None  # no Trainer attached: logging and the optimizer are stand-ins
    module.optimizers = lambda: SimpleNamespace(param_groups=[{"lr": 0.0}])
    images = torch.randn(6, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    labels = torch.tensor([0, 1, 2, 0, 1, 1])  # same-class images in one batch are ordinary negatives
    torch.manual_seed(3)
    loss = module.training_step((images, labels), 0)
    torch.manual_seed(3)
    tokens = module.sample_captions(labels)
    model = module.model
    expected = open_clip.ClipLoss()(F.normalize(model.image_encoder(images), dim=-1),
                                    F.normalize(model.text.encode_text(tokens), dim=-1), model.text.logit_scale.exp())
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    loss.backward()
    assert model.text.logit_scale.grad is not None and model.image_encoder.conv1.weight.grad is not None
    assert model.head.weight.grad is None  # the head is derived, not trained


def _perturbed(classifier: TextHeadClassifier) -> dict[str, torch.Tensor]:
    """A stand-in for FLYP's weights: every tensor moved, the head rebuilt from the moved text tower."""
    g = torch.Generator().manual_seed(5)
    theta_1 = {k: v + 0.3 * (v.std(correction=0) + 0.05) * torch.randn(v.shape, generator=g) if v.is_floating_point()
               else v.clone() for k, v in classifier.state_dict().items()}
    other = _classifier()
    other.load_state_dict(theta_1)
    other.rebuild_head()
    return _state(other)


def test_head_at_each_alpha_is_the_zero_shot_head_of_the_interpolated_text_tower():
    model = _classifier()
    theta_0 = _state(model)
    theta_1 = _perturbed(model)
    mix = weight_mix(model)
    assert isinstance(mix, HeadFromText) and weight_mix(ImageClassifier(torch.nn.Identity(), model.head)) is \
        interpolate_into

    mix(model, theta_0, theta_1, 0.0)
    assert torch.equal(model.head.weight, theta_0["head.weight"])  # the zero-shot head
    zero_shot = _classifier()  # the same seed: the same zero-shot model, built independently
    assert torch.equal(model.head.weight, zero_shot.head.weight)

    mix(model, theta_0, theta_1, 1.0)
    fine_tuned = _classifier()
    fine_tuned.load_state_dict(theta_1)
    assert torch.equal(model.head.weight, zero_shot_weights(fine_tuned.text, fine_tuned.tokenizer, CLASSES,
                                                            TEMPLATES))

    mix(model, theta_0, theta_1, 0.5)
    half = interpolate(theta_0, theta_1, 0.5)
    assert torch.equal(model.text.logit_scale, half["text.logit_scale"])
    between = _classifier()
    between.load_state_dict(half)
    assert torch.equal(model.head.weight, between.head_weights())
    assert not torch.allclose(model.head.weight, half["head.weight"])  # not the interpolated heads

    # Each alpha's head costs one pass through the text tower per sweep, however many blocks revisit it.
    calls = []
    original = TextHeadClassifier.rebuild_head
    model.rebuild_head = lambda *a, **k: (calls.append(1), original(model, *a, **k))
    mix(model, theta_0, theta_1, 1.0)
    assert not calls and torch.equal(model.head.weight, theta_1["head.weight"])


@pytest.fixture(scope="module")
def flyp_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("flyp")
    data = make_data(root)
    cfg = tiny_cfg(data, root / "out", ["finetune=flyp", "finetune.epochs=2", "wiseft.alphas=[0.0,0.5,1.0]",
                                        TEMPLATES_OVERRIDE])
    objective = train(cfg)
    return cfg, root, data, objective


def _load(path) -> tuple[TextHeadClassifier, dict]:
    """A classifier rebuilt from a checkpoint file alone (model config and class names from its metadata)."""
    state, meta = load_weights(path)
    bundle = build_clip(meta["model"]["name"])
    model = TextHeadClassifier.from_clip(bundle.model, bundle.tokenizer, meta["classnames"], TEMPLATES,
                                         ClassificationHead(torch.zeros_like(state["head.weight"])))
    check_matches(model, state, str(path))
    model.load_state_dict(state)
    return model, meta


def test_writes_the_usual_outputs_and_trains_both_towers(flyp_run):
    _, root, _, objective = flyp_run
    out = root / "out"
    for name in ("results.csv", "results.jsonl", "summary.json", "curve.png", "config.yaml",
                 "checkpoints/zeroshot.safetensors", "checkpoints/finetuned.safetensors",
                 "checkpoints/wiseft_chosen.safetensors"):
        assert (out / name).is_file(), name
    curves = read_curves(out)
    assert set(curves) == {"wiseft", "ensemble"} and [r["alpha"] for r in curves["wiseft"]] == [0.0, 0.5, 1.0]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["finetune"] == "flyp"
    assert objective == pytest.approx(summary["chosen"]["avg_ref_shifts"])
    theta_0, _ = load_weights(out / "checkpoints" / "zeroshot.safetensors")
    theta_1, meta = load_weights(out / "checkpoints" / "finetuned.safetensors")
    assert meta["finetune"] == "flyp"
    for part in ("image_encoder.", "text.transformer.", "text.logit_scale"):
        assert any(not torch.equal(v, theta_1[k]) for k, v in theta_0.items() if k.startswith(part)), part


def test_head_follows_the_text_tower_in_every_checkpoint(flyp_run):
    out = flyp_run[1] / "out"
    for name in ("zeroshot", "finetuned", "wiseft_chosen"):
        model, _ = _load(out / "checkpoints" / f"{name}.safetensors")
        assert torch.equal(model.head.weight, model.head_weights()), name


@pytest.mark.parametrize("ckpt,row", [("zeroshot", "zeroshot"), ("finetuned", "finetuned")])
def test_sweep_endpoints_equal_the_models_evaluated_directly(flyp_run, ckpt, row):
    cfg, root, _, _ = flyp_run
    out = root / "out"
    summary = json.loads((out / "summary.json").read_text())
    model, _ = _load(out / "checkpoints" / f"{ckpt}.safetensors")
    bundle = build_clip("tiny-vit")
    dm = WiSEFTDataModule(to_settings(cfg).data)
    dm.check()
    dm.set_transforms(bundle.train_transform, bundle.eval_transform)
    acc = evaluate(model, {s.name: dm.eval_loader(s) for s in dm.eval_sets})
    assert acc == {k: pytest.approx(summary[row][k], abs=1e-9) for k in acc}


def test_standalone_evaluation_and_export_of_flyp_checkpoints(flyp_run):
    _, root, data, _ = flyp_run
    run, out = root / "out", root / "evaluate"
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose(config_name="evaluate", overrides=[
            "data=imagefolder", f"paths.data_dir={data}", "data.batch_size=8", "device=cpu",
            TEMPLATES_OVERRIDE,
            f"+data.shifts.shift_full={{root:{data}/shift_full}}", f"+data.shifts.shift_sub={{root:{data}/shift_sub}}",
            f"finetuned={run}/checkpoints/finetuned.safetensors", f"zeroshot={run}/checkpoints/zeroshot.safetensors",
            "wiseft.alphas=[0.0,0.5,1.0]", "export.enabled=true"])
    with open_dict(cfg):
        cfg.paths.output_dir = str(out)
    evaluate_checkpoints(cfg)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["finetune"] == "flyp"
    got, expected = read_curves(out), read_curves(run)
    assert {m: [r["reference"] for r in rows] for m, rows in got.items()} == {
        m: [r["reference"] for r in rows] for m, rows in expected.items()}
    for method, rows in expected.items():
        for a, b in zip(got[method], rows, strict=True):
            assert a == pytest.approx(b)
    # The export holds the fine-tuned text tower (not the original one) and the head built from it.
    chosen, _ = _load(out / "checkpoints" / "wiseft_chosen.safetensors")
    exported = open_clip.create_model("tiny-vit", pretrained=summary["export"]["model"])
    assert torch.equal(exported.logit_scale, chosen.text.logit_scale)
    assert torch.equal(exported.token_embedding.weight, chosen.text.token_embedding.weight)
    assert torch.equal(exported.visual.conv1.weight, chosen.image_encoder.conv1.weight)
    head, classnames = load_head(summary["export"]["head"])
    assert classnames == list(CLASSES) and torch.equal(head.weight, chosen.head.weight)
    # The command-line export of a run's FLYP checkpoint needs no pretrained weights either.
    paths = export_checkpoint(run / "checkpoints" / "finetuned.safetensors", root / "export")
    assert open_clip.create_model("tiny-vit", pretrained=str(paths["model"])).logit_scale.item() == pytest.approx(
        load_weights(run / "checkpoints" / "finetuned.safetensors")[0]["text.logit_scale"].item())


def test_imagenet_recipe_is_the_reference_command():
    from tests.conftest import compose_cfg

    cfg = compose_cfg(["experiment=vit_b16_flyp", "paths.data_dir=/data"])
    settings = to_settings(cfg)
    f = settings.finetune
    assert (f.mode, f.lr, f.weight_decay, f.epochs, f.warmup_steps, f.grad_clip, f.augment) == (
        "flyp", 1e-5, 0.1, 10, 500, None, True)
    assert (settings.model.name, settings.model.pretrained) == ("ViT-B-16-quickgelu", "openai")
    assert settings.data.batch_size == 512 and settings.data.templates == "openai_imagenet"
    assert cfg.trainer.gradient_clip_val is None and cfg.trainer.max_epochs == 10
