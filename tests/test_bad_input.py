"""Bad input: each case fails with one line naming the problem, before expensive work, leaving nothing half-written.

Config mistakes are checked through ``python train.py`` itself (they fail in about a second, before Hydra creates
the run folder); data and checkpoint mistakes through ``train(cfg)``, which runs the same checks in the same order.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
import torch

from tests.conftest import make_tree, tiny_cfg
from tests.reliability_helpers import (
    assert_nothing_half_written,
    cli_args,
    error_line,
    files_under,
    make_data,
    run_cli,
)
from wiseft.errors import CheckpointError, ConfigError, DataError, one_line
from wiseft.io.checkpoints import load_weights, save_weights
from wiseft.methods.interpolate import interpolate
from wiseft.pipeline.train import train


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return make_data(tmp_path_factory.mktemp("bad_input"))


@pytest.fixture(scope="module")
def finished_run(data, tmp_path_factory) -> Path:
    """A finished one-epoch run with a Lightning checkpoint (to resume from, corrupt, or relaunch into)."""
    out = tmp_path_factory.mktemp("finished") / "run"
    train(tiny_cfg(data, out, ["callbacks=model_checkpoint", "wiseft.alphas=[0.5]"]))
    return out


def fails_cleanly(data: Path, out: Path, extra: list[str], error: type[Exception]) -> str:
    """Run ``train`` expecting ``error``; check nothing was written; return the one-line message."""
    with pytest.raises(error) as info:
        train(tiny_cfg(data, out, extra))
    assert files_under(out) == [], files_under(out)
    message = one_line(info.value)
    assert "\n" not in str(info.value)
    return message


# --- configs, through `python train.py` ----------------------------------------------------------------------------

CONFIG_CASES = [
    ("wiseft.alphas=[1.5]", "wiseft.alphas: alpha 1.5 is outside [0, 1]"),
    ("wiseft.alphas=[-0.1,0.5]", "wiseft.alphas: alpha -0.1 is outside [0, 1]"),
    ("wiseft.alphas=[]", "wiseft.alphas: the alpha grid is empty"),
    ("wiseft.alphas=[0.5,0.2]", "wiseft.alphas: the grid must be strictly increasing, got 0.5 then 0.2"),
    ("wiseft.alphas=[0.2,0.2]", "wiseft.alphas: the grid must be strictly increasing, got 0.2 then 0.2"),
    ("finetune.lr=0", "finetune.lr: must be positive, got 0.0"),
    ("finetune.lr=-1e-4", "finetune.lr: must be positive, got -0.0001"),
    ("data.batch_size=0", "data.batch_size: must be positive, got 0"),
    ("finetune.epochs=-2", "finetune.epochs: must be positive, got -2"),
    ("finetune.epochs=0", "finetune.epochs: must be positive, got 0"),
    ("data.verify_images=maybe", "data.verify_images: must be one of ('off', 'error', 'skip'), got 'maybe'"),
]


@pytest.mark.parametrize(("override", "message"), CONFIG_CASES, ids=[c[0] for c in CONFIG_CASES])
def test_cli_rejects_bad_config_before_creating_the_run_folder(data, tmp_path, override, message):
    out = tmp_path / "run"
    proc = run_cli(cli_args(data, out, [override]), timeout=120)
    assert proc.returncode == 2
    assert error_line(proc) == f"error: {message}"
    assert not out.exists()


def test_cli_refuses_a_target_outside_the_allow_list_and_runs_nothing(data, tmp_path):
    marker = tmp_path / "pwned"
    out = tmp_path / "run"
    evil = ["+callbacks.evil._target_=os.system", f"+callbacks.evil.command='touch {marker}'"]
    proc = run_cli(cli_args(data, out, evil))
    assert proc.returncode == 2
    assert error_line(proc) == ("error: callbacks.evil._target_: refusing to instantiate 'os.system'; a config may "
                                "only name classes of wiseft or Lightning's callbacks, loggers, strategies, plugins "
                                "and profilers")
    assert not marker.exists() and not out.exists()


def test_cli_output_folder_that_cannot_be_written(data, tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    proc = run_cli(cli_args(data, blocker / "run"))
    assert proc.returncode == 2
    assert error_line(proc) == (f"error: output folder '{blocker / 'run'}' cannot be created: '{blocker}' is not a "
                                "folder")


@pytest.mark.parametrize(("override", "printed"), [
    ("data=nope", "Could not find 'data/nope'"),
    ("finetune.lrr=1", "Could not override 'finetune.lrr'"),
    ("finetune.lr=fast", "Value 'fast' of type 'str' could not be converted to Float"),
])
def test_cli_hydra_composition_errors_exit_as_bad_input(data, tmp_path, override, printed):
    out = tmp_path / "run"
    proc = run_cli([*cli_args(data, out), override])
    assert proc.returncode == 2  # Hydra prints these itself; they exit with the status of other bad input
    assert printed in proc.stderr
    assert not out.exists()


# --- every other config group and the top-level values, and weights files: the corpus ---------------------------
# Each class of input: (overrides, the error, the one line). Paths: {weights} is the fixture's folder, {asset} the
# package's assets ({{ }} for a literal brace). All are checked before any model is built; through `python train.py`,
# before the run folder exists (one case per class below runs the CLI).

TRAINER_CASES = [
    (["trainer.max_epochs=abc"], ConfigError, "trainer.max_epochs: expected int | None, got 'abc'"),
    (["trainer.deterministic=maybe"], ConfigError, "trainer.deterministic: expected bool | 'warn' | None, got 'maybe'"),
    (["+trainer.max_epoch=3"], ConfigError,
     "trainer.max_epoch: not an argument of lightning.Trainer; did you mean 'max_epochs'?"),
    (["+trainer.limit_train_batches=1.5"], ConfigError,
     "trainer.limit_train_batches: You have passed invalid value 1.5 for limit_train_batches, it has to be in "
     "[0.0, 1.0] or an int."),
    (["+trainer.strategy=nope"], ConfigError, "trainer.strategy: You selected an invalid strategy name: "
                                             "`strategy='nope'`."),
    # Lightning's message names no argument: the one whose default makes the error go away is named.
    (["+trainer.max_time={{dayz: 1}}"], ConfigError,
     "trainer.max_time: 'dayz' is an invalid keyword argument for __new__() (got {{'dayz': 1}})"),
]
CALLBACK_AND_LOGGER_CASES = [
    (["callbacks=model_checkpoint", "callbacks.model_checkpoint.every_n_train_steps=-1"], ConfigError,
     "callbacks.model_checkpoint.every_n_train_steps: Invalid value for every_n_train_steps=-1. Must be >= 0"),
    (["callbacks=model_checkpoint", "callbacks.model_checkpoint.save_top_k=all"], ConfigError,
     "callbacks.model_checkpoint.save_top_k: expected int, got 'all'"),
    (["callbacks=model_checkpoint", "+callbacks.model_checkpoint.evry_n_epochs=1"], ConfigError,
     "callbacks.model_checkpoint.evry_n_epochs: not an argument of lightning.pytorch.callbacks.ModelCheckpoint; "
     "did you mean 'every_n_epochs'?"),
    (["+logger.csv.flush_logs_every_n_steps=often"], ConfigError,
     "logger.csv.flush_logs_every_n_steps: expected int, got 'often'"),
    (["logger.csv._target_=lightning.pytorch.loggers.NoSuchLogger"], ConfigError,
     "logger.csv._target_: cannot import 'lightning.pytorch.loggers.NoSuchLogger'"),
]
TOP_LEVEL_CASES = [
    (["seed=abc"], ConfigError, "seed: Value 'abc' of type 'str' could not be converted to Integer"),
    (["seed=1.5"], ConfigError, "seed: Value '1.5' of type 'float' could not be converted to Integer"),
    (["auto_resume=maybe"], ConfigError, "auto_resume: Value 'maybe' is not a valid bool (type str)"),
    (["log_level=LOUD"], ConfigError,
     "log_level: must be one of ('DEBUG', 'INFO', 'WARNING', 'ERROR', 'CRITICAL'), got 'LOUD'"),
    (["ckpt_path=/nowhere/last.ckpt"], CheckpointError, "ckpt_path: checkpoint '/nowhere/last.ckpt' does not exist"),
]
WEIGHTS_CASES = [
    (["model.pretrained={asset}/toy_clip.safetensors"], CheckpointError,
     "model.pretrained: '{asset}/toy_clip.safetensors' is not a checkpoint of 'tiny-vit': key 'text_projection' has "
     "shape (128, 128), 'tiny-vit' expects (32, 32) (keys: 20 missing, 115 unexpected, 16 of another shape)"),
    (["model.pretrained={weights}/reshaped.safetensors"], CheckpointError,
     "model.pretrained: '{weights}/reshaped.safetensors' is not a checkpoint of 'tiny-vit': key 'visual.proj' has "
     "shape (32, 16), 'tiny-vit' expects (32, 32) (keys: 1 of another shape)"),
    (["model.pretrained={weights}/missing_key.pt"], CheckpointError,
     "model.pretrained: '{weights}/missing_key.pt' is not a checkpoint of 'tiny-vit': key 'visual.proj' of "
     "'tiny-vit' is missing (keys: 1 missing)"),
    (["model.pretrained={weights}/extra_key.pt"], CheckpointError,
     "model.pretrained: '{weights}/extra_key.pt' is not a checkpoint of 'tiny-vit': it has key 'visual.extra', "
     "which 'tiny-vit' does not (keys: 1 unexpected)"),
    (["model.pretrained={weights}/a_list.pt"], CheckpointError,
     "model.pretrained: '{weights}/a_list.pt' holds no state dict of weights"),
]
CORPUS = TRAINER_CASES + CALLBACK_AND_LOGGER_CASES + TOP_LEVEL_CASES + WEIGHTS_CASES


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> Path:
    """Weight files for tiny_random's architecture (tiny-vit) with one thing wrong each."""
    import open_clip
    from safetensors.torch import save_file

    from wiseft.models.factory import PACKAGE_MODEL_CONFIGS, register_model_configs

    register_model_configs(PACKAGE_MODEL_CONFIGS)
    folder = tmp_path_factory.mktemp("weights")
    state = open_clip.create_model("tiny-vit").state_dict()
    reshaped = {k: v.contiguous() for k, v in state.items()}
    reshaped["visual.proj"] = torch.zeros(32, 16)
    save_file(reshaped, str(folder / "reshaped.safetensors"))
    torch.save({k: v for k, v in state.items() if k != "visual.proj"}, folder / "missing_key.pt")
    # Wrapped and prefixed as a DDP training script saves it: unwrapped as open_clip does, so only the extra key counts.
    torch.save({"state_dict": {f"module.{k}": v for k, v in {**state, "visual.extra": torch.zeros(1)}.items()}},
               folder / "extra_key.pt")
    torch.save([1, 2, 3], folder / "a_list.pt")
    return folder


def _filled(text: str, weights: Path) -> str:
    from wiseft.config.schema import ASSETS_DIR

    return text.format(weights=weights, asset=ASSETS_DIR)


@pytest.mark.parametrize(("overrides", "error", "message"), CORPUS, ids=[" ".join(c[0]) for c in CORPUS])
def test_bad_input_corpus_fails_in_one_line_before_any_model_is_built(data, weights, tmp_path, overrides, error,
                                                                      message):
    overrides = [_filled(o, weights) for o in overrides]
    assert fails_cleanly(data, tmp_path / "run", overrides, error).startswith(_filled(message, weights))


@pytest.mark.parametrize(("overrides", "message"), [
    (TRAINER_CASES[0][0], TRAINER_CASES[0][2]),
    (CALLBACK_AND_LOGGER_CASES[0][0], CALLBACK_AND_LOGGER_CASES[0][2]),
    (TOP_LEVEL_CASES[0][0], TOP_LEVEL_CASES[0][2]),
    (WEIGHTS_CASES[1][0], WEIGHTS_CASES[1][2]),
], ids=["trainer", "callbacks", "top-level", "weights"])
def test_cli_corpus_one_case_per_class_exits_2_before_the_run_folder_exists(data, weights, tmp_path, overrides,
                                                                             message):
    out = tmp_path / "run"
    proc = run_cli(cli_args(data, out, [_filled(o, weights) for o in overrides]))
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert error_line(proc).startswith(f"error: {_filled(message, weights)}")
    assert not out.exists()


def test_output_folder_not_writable_in_process(data, tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    with pytest.raises(PermissionError) as info:
        train(tiny_cfg(data, blocker / "run"))
    assert str(info.value) == f"output folder '{blocker / 'run'}' cannot be created: '{blocker}' is not a folder"


def test_unknown_model_name(data, tmp_path):
    message = fails_cleanly(data, tmp_path / "run", ["model.name=nope-vit"], ConfigError)
    assert message.startswith("model.name: unknown open_clip model 'nope-vit' (known include: ")


def test_unknown_dataset_kind(data, tmp_path):
    from wiseft.data.registry import BUILTIN_KIND_MODULES, DATASET_KINDS

    message = fails_cleanly(data, tmp_path / "run", ["data.reference.test.kind=nope"], ConfigError)
    known = ", ".join(sorted({*DATASET_KINDS, *BUILTIN_KIND_MODULES}))
    assert "imagefolder" in known
    assert message == f"data.reference.test.kind: unknown dataset kind 'nope' (known: {known})"


def test_unknown_template_set(data, tmp_path):
    message = fails_cleanly(data, tmp_path / "run", ["data.templates=nope"], ConfigError)
    assert message == "data.templates: unknown template set 'nope' (known: openai_imagenet, simple_imagenet, toy)"


def test_shift_classes_not_a_subset_of_the_reference(data, tmp_path):
    make_tree(tmp_path / "odd", classes=("blue", "purple"), per_class=1)
    message = fails_cleanly(data, tmp_path / "run", [f"+data.shifts.odd={{root:{tmp_path / 'odd'}}}"], ConfigError)
    assert message == ("data.shifts.odd: classes ['purple'] are not reference classes; an evaluation set's classes "
                       "must be a subset of the reference classes (or give a class_map)")


# --- data ----------------------------------------------------------------------------------------------------------

def test_missing_dataset_folder(data, tmp_path):
    missing = tmp_path / "nowhere"
    message = fails_cleanly(data, tmp_path / "run", [f"data.reference.test.root={missing}"], DataError)
    assert message == f"data.reference.test: dataset folder '{missing}' does not exist"


def test_empty_class_folder(data, tmp_path):
    tree = make_tree(tmp_path / "test_set", per_class=1)
    for image in (tree / "red").iterdir():
        image.unlink()
    message = fails_cleanly(data, tmp_path / "run", [f"data.reference.test.root={tree}"], DataError)
    assert message == f"data.reference.test: class folder '{tree / 'red'}' holds no image"


def _tree_with_bad_images(root: Path) -> tuple[Path, Path, Path]:
    tree = make_tree(root, per_class=3)
    truncated, garbage = tree / "green" / "1.png", tree / "red" / "2.png"
    truncated.write_bytes(truncated.read_bytes()[:200])
    garbage.write_bytes(b"this is not an image")
    return tree, truncated, garbage


def test_corrupt_or_truncated_image_is_named_before_training(data, tmp_path):
    tree, truncated, _ = _tree_with_bad_images(tmp_path / "shift")
    extra = [f"+data.shifts.bad={{root:{tree}}}", "data.verify_images=error"]
    message = fails_cleanly(data, tmp_path / "run", extra, DataError)
    assert message == (f"data.shifts.bad: cannot read image '{truncated}': image file is truncated (2 unreadable in "
                       "this dataset; set data.verify_images=skip to leave unreadable files out)")


def test_skip_switch_leaves_bad_images_out_and_reports_them(data, tmp_path, caplog):
    tree, truncated, garbage = _tree_with_bad_images(tmp_path / "shift")
    out = tmp_path / "run"
    train(tiny_cfg(data, out, [f"+data.shifts.bad={{root:{tree}}}", "data.verify_images=skip", "wiseft.alphas=[0.5]"]))
    assert "data.shifts.bad: skipped 2 unreadable image(s) of 9" in caplog.text
    listed = [line.split("\t")[0] for line in (out / "skipped_images.txt").read_text().splitlines()]
    assert listed == [str(truncated), str(garbage)]
    assert (out / "summary.json").is_file()
    assert_nothing_half_written(out)


def test_unreadable_image_at_load_time_is_named_in_one_line_even_from_a_worker(data, tmp_path):
    train_tree = tmp_path / "train"
    shutil.copytree(data / "reference" / "train", train_tree)
    bad = train_tree / "blue" / "0.png"
    bad.write_bytes(b"garbage")
    out = tmp_path / "run"
    with pytest.raises(DataError) as info:  # default verify_images=off: found when the image is first loaded
        train(tiny_cfg(data, out, [f"data.reference.train.root={train_tree}", "data.num_workers=1"]))
    assert "Original Traceback" in str(info.value)  # it crossed the worker boundary
    assert one_line(info.value) == (
        f"cannot read image '{bad}': cannot identify image file '{bad}' (set data.verify_images=skip to leave "
        "unreadable files out, or =error to find them all before training)")
    assert not (out / "summary.json").exists()
    assert_nothing_half_written(out)


def test_csv_label_out_of_range(data, tmp_path):
    csv = tmp_path / "labels.csv"
    image = data / "shift_full" / "red" / "0.png"
    csv.write_text(f"path,label\n{image},2\n{image},7\n")
    extra = [f"+data.shifts.csvset={{kind:csv,root:{csv},classnames:[blue,green,red]}}"]
    message = fails_cleanly(data, tmp_path / "run", extra, DataError)
    assert message == f"data.shifts.csvset: {csv}:3: label 7 is outside [0, 3)"


# --- checkpoints ---------------------------------------------------------------------------------------------------

def test_truncated_resume_checkpoint(data, finished_run, tmp_path):
    ckpt = tmp_path / "truncated.ckpt"
    full = (finished_run / "checkpoints" / "lightning" / "last.ckpt").read_bytes()
    ckpt.write_bytes(full[: len(full) // 2])
    out = tmp_path / "run"
    with pytest.raises(CheckpointError) as info:
        train(tiny_cfg(data, out, [f"ckpt_path={ckpt}"]))
    assert str(info.value) == (f"ckpt_path: '{ckpt}' is truncated or not a PyTorch checkpoint (PytorchStreamReader "
                               "failed reading zip archive: failed finding central directory.)")
    assert files_under(out) == []


def test_truncated_pretrained_weights(data, tmp_path):
    weights = tmp_path / "clip.safetensors"
    save_weights({"w": torch.zeros(1000)}, weights, {})
    weights.write_bytes(weights.read_bytes()[:-100])
    message = fails_cleanly(data, tmp_path / "run", [f"model.pretrained={weights}"], CheckpointError)
    assert message.startswith(f"model.pretrained: '{weights}' is truncated or not a safetensors file (")


def _edited_checkpoint(source: Path, dest: Path, edit) -> Path:
    ckpt = torch.load(source, weights_only=True)
    edit(ckpt["state_dict"])
    torch.save(ckpt, dest)
    return dest


def test_resume_checkpoint_with_another_class_count(data, finished_run, tmp_path):
    def five_classes(state):
        state["model.head.weight"] = torch.zeros(5, state["model.head.weight"].shape[1])
        state["model.head.bias"] = torch.zeros(5)

    ckpt = _edited_checkpoint(finished_run / "checkpoints" / "lightning" / "last.ckpt", tmp_path / "c5.ckpt",
                              five_classes)
    out = tmp_path / "run"
    with pytest.raises(CheckpointError) as info:
        train(tiny_cfg(data, out, [f"ckpt_path={ckpt}"]))
    assert str(info.value) == (f"checkpoint '{ckpt}': key 'model.head.weight' has shape (5, 32), the model expects "
                               "(3, 32)")
    assert not (out / "summary.json").exists()
    assert_nothing_half_written(out)


def test_resume_checkpoint_of_another_architecture(data, finished_run, tmp_path):
    def other_arch(state):
        for key in [k for k in state if ".transformer.resblocks.0." in k]:
            state[key.replace("resblocks.0.", "resblocks.7.")] = state.pop(key)

    ckpt = _edited_checkpoint(finished_run / "checkpoints" / "lightning" / "last.ckpt", tmp_path / "arch.ckpt",
                              other_arch)
    with pytest.raises(CheckpointError, match=re.escape(f"checkpoint '{ckpt}': key 'model.image_encoder.transformer"
                                                        ".resblocks.0.")) as info:
        train(tiny_cfg(data, tmp_path / "run", [f"ckpt_path={ckpt}"]))
    assert re.fullmatch(r".* is missing \(\d+ keys missing\)", str(info.value))


def test_interpolating_checkpoints_that_do_not_match(finished_run, tmp_path):
    theta_0, meta = load_weights(finished_run / "checkpoints" / "zeroshot.safetensors")
    other = dict(theta_0, **{"head.weight": torch.zeros(5, 32), "head.bias": torch.zeros(5)})
    save_weights(other, tmp_path / "five_classes.safetensors", meta)
    theta_1, _ = load_weights(tmp_path / "five_classes.safetensors")
    with pytest.raises(CheckpointError) as info:
        interpolate(theta_0, theta_1, 0.5)
    assert str(info.value) == ("key 'head.bias' has shape (3,) in the zero-shot weights but (5,) in the fine-tuned "
                               "weights")


def test_relaunch_into_a_run_folder_with_another_config(data, finished_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    with pytest.raises(ConfigError) as info:
        train(tiny_cfg(data, run, ["callbacks=model_checkpoint", "wiseft.alphas=[0.5]", "finetune.lr=2e-3"]))
    assert str(info.value) == (f"finetune.lr: the run folder '{run}' was started with 0.001, this launch has 0.002; "
                               "resume with the same config or use a new folder (hydra.run.dir=...)")
    assert sorted(files_under(run)) == sorted(run / p.relative_to(finished_run) for p in files_under(finished_run))
