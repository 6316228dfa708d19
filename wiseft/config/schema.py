"""Structured config schemas: a typo in a key fails when Hydra composes, a bad value before any work.

Each group's YAML files start from the schema stored here (``defaults: [schema]``), so unknown keys are
rejected by OmegaConf and types are checked. Value checks (ranges, non-empty grids) live in
``__post_init__`` and run when :func:`to_settings` converts the composed config into dataclasses.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf

from wiseft.errors import ConfigError

DEFAULT_ALPHAS = [round(0.1 * i, 1) for i in range(11)]
FINETUNE_MODES = ("e2e", "linear", "lpft", "flyp")
VERIFY_MODES = ("off", "error", "skip")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


def _log_level(value: str) -> None:
    if value.upper() not in LOG_LEVELS:
        raise ConfigError(f"log_level: must be one of {LOG_LEVELS}, got '{value}'")


def _positive(key: str, value: float) -> None:
    if not (value > 0 and math.isfinite(value)):
        raise ConfigError(f"{key}: must be positive, got {value}")


@dataclass
class ModelConfig:
    """open_clip model to start from (see :func:`wiseft.models.factory.build_clip`).

    Attributes:
        name: open_clip architecture (``ViT-B-32-quickgelu``...), ``local-dir:<folder>`` or ``hf-hub:<repo>``.
        pretrained: A tag of open_clip's registry, a local weights file, or null (random initialisation).
        allow_download: Whether a tag missing from open_clip's cache may be downloaded (``HF_HUB_OFFLINE=1`` also
            turns downloads off).
    """

    name: str = MISSING
    pretrained: str | None = None
    config_file: str | None = None
    force_quick_gelu: bool = False
    tokenizer_kwargs: dict[str, Any] = field(default_factory=dict)
    cache_dir: str | None = None
    precision: str = "fp32"
    aug_cfg: dict[str, Any] = field(default_factory=dict)
    allow_download: bool = True
    # Speed and memory switches (see wiseft.models.performance): activation checkpointing of the image tower's
    # blocks, and torch.compile of the image encoder (mode: a torch.compile mode such as "max-autotune").
    grad_checkpointing: bool = False
    compile: bool = False
    compile_mode: str | None = None


@dataclass
class DatasetSpec:
    """One dataset on disk, built by the builder registered under ``kind``.

    Attributes:
        kind: Registered builder (``imagefolder``, ``csv``, ``toy``, ``imagenet``...).
        root: Folder (or file) the dataset lives in.
        classnames: Display names of the classes in label order; defaults to the builder's (folder names).
        class_map: For evaluation sets with coarser classes: target class name -> reference class names whose
            logits are max-pooled. Without it, an evaluation set's class names must be reference class names.
        options: Builder-specific settings.
        enabled: Switch an evaluation set off without deleting it.
    """

    kind: str = "imagefolder"
    root: str = MISSING
    classnames: list[str] | None = None
    class_map: dict[str, list[str]] | None = None
    options: dict[str, Any] = field(default_factory=dict)
    enabled: bool = True


@dataclass
class ReferenceConfig:
    """The reference distribution: fine-tuned on (``train``), alpha chosen on (``val``), reported (``test``).

    ``val`` may be left out: ``val_fraction`` of ``train`` is then held out for it.
    """

    name: str = "reference"
    train: DatasetSpec = MISSING
    test: DatasetSpec = MISSING
    val: DatasetSpec | None = None
    val_fraction: float = 0.05


@dataclass
class DataConfig:
    """Reference and shift datasets, prompts and loading.

    Attributes:
        reference: The reference distribution.
        shifts: Name -> evaluation set (a result column each).
        templates: Prompt set name (``openai_imagenet``, ``simple_imagenet``, ``toy``) or a list of format strings.
        world: Free-form settings shared by the specs of a generated dataset (interpolated into them).
        batch_size: Training batch size per process.
        eval_batch_size: Evaluation batch size (default: ``batch_size``).
        num_workers: DataLoader workers.
        verify_images: ``off`` (an unreadable image fails when loaded, naming the file), ``error`` (decode every
            image before training, fail on the first bad one) or ``skip`` (decode first, leave bad files out and
            list them in ``skipped_images.txt``).
    """

    reference: ReferenceConfig = MISSING
    # Typed as Any so that `+data.shifts.NAME={root:...}` works from the command line (OmegaConf cannot assign a
    # dict to a dict-of-dataclass node); each entry is checked against DatasetSpec in `to_settings`.
    shifts: dict[str, Any] = field(default_factory=dict)
    templates: Any = "openai_imagenet"
    world: dict[str, Any] = field(default_factory=dict)
    batch_size: int = 128
    eval_batch_size: int | None = None
    num_workers: int = 0
    verify_images: str = "off"

    def __post_init__(self) -> None:
        if self.verify_images not in VERIFY_MODES:
            raise ConfigError(f"data.verify_images: must be one of {VERIFY_MODES}, got '{self.verify_images}'")
        if self.num_workers < 0:
            raise ConfigError(f"data.num_workers: must be >= 0, got {self.num_workers}")
        if self.batch_size <= 0:
            raise ConfigError(f"data.batch_size: must be positive, got {self.batch_size}")
        if self.eval_batch_size is not None and self.eval_batch_size <= 0:
            raise ConfigError(f"data.eval_batch_size: must be positive, got {self.eval_batch_size}")
        if not 0.0 <= self.reference.val_fraction < 1.0:
            raise ConfigError(f"data.reference.val_fraction: must lie in [0, 1), got {self.reference.val_fraction}")
        if self.reference.val is None and self.reference.val_fraction == 0.0:
            raise ConfigError("data.reference.val: no validation set and val_fraction is 0, so alpha could only be "
                              "chosen on test or shift data; give one of them")
        reserved = {self.reference.name, f"{self.reference.name}_val", "alpha", "avg_shifts", "avg_ref_shifts"}
        for name in self.shifts:
            if name in reserved:
                raise ConfigError(f"data.shifts.{name}: name is reserved for a result column; rename it")


@dataclass
class ProbeConfig:
    """LP-FT's first stage: the linear probe, trained as ``finetune=linear`` on the frozen encoder's features.

    Attributes:
        lr: Peak AdamW learning rate of the head.
        weight_decay: AdamW weight decay.
        epochs: Epochs over the cached training features.
        warmup_steps: Linear warmup before the cosine decay.
    """

    lr: float = 1e-3
    weight_decay: float = 0.1
    epochs: int = 10
    warmup_steps: int = 500

    def __post_init__(self) -> None:
        _positive("finetune.probe.lr", self.lr)
        if self.epochs <= 0:
            raise ConfigError(f"finetune.probe.epochs: must be positive, got {self.epochs}")
        if self.weight_decay < 0:
            raise ConfigError(f"finetune.probe.weight_decay: must be >= 0, got {self.weight_decay}")
        if self.warmup_steps < 0:
            raise ConfigError(f"finetune.probe.warmup_steps: must be >= 0, got {self.warmup_steps}")


@dataclass
class FinetuneConfig:
    """Fine-tuning recipe.

    Modes: ``e2e`` (everything, cross-entropy), ``linear`` (the head only, on cached features), ``lpft`` (LP-FT:
    the ``probe`` recipe as ``linear``, then end to end from the probe's head with this recipe) and ``flyp``
    (FLYP: both towers with CLIP's contrastive loss on class-prompt captions; the head is rebuilt from the text
    tower). ``augment: false`` trains on the evaluation preprocessing (resize and centre crop) instead of
    open_clip's training transform (RandomResizedCrop), as the reference code does for its linear classifier.
    """

    mode: str = "e2e"
    lr: float = 3e-5
    weight_decay: float = 0.1
    epochs: int = 10
    warmup_steps: int = 500
    label_smoothing: float = 0.0
    grad_clip: float | None = 1.0
    betas: tuple[float, float] = (0.9, 0.999)
    augment: bool = True
    # linear and lpft modes: folder of the cached image features (None: computed in memory, single process only).
    feature_cache: str | None = None
    # lpft mode only: the first stage's recipe.
    probe: ProbeConfig = field(default_factory=ProbeConfig)

    def __post_init__(self) -> None:
        if self.mode not in FINETUNE_MODES:
            raise ConfigError(f"finetune.mode: must be one of {FINETUNE_MODES}, got '{self.mode}'")
        _positive("finetune.lr", self.lr)
        if self.epochs <= 0:
            raise ConfigError(f"finetune.epochs: must be positive, got {self.epochs}")
        if self.weight_decay < 0:
            raise ConfigError(f"finetune.weight_decay: must be >= 0, got {self.weight_decay}")
        if self.warmup_steps < 0:
            raise ConfigError(f"finetune.warmup_steps: must be >= 0, got {self.warmup_steps}")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ConfigError(f"finetune.label_smoothing: must lie in [0, 1), got {self.label_smoothing}")
        if self.grad_clip is not None:
            _positive("finetune.grad_clip", self.grad_clip)
        if self.mode == "flyp" and self.label_smoothing != 0.0:
            raise ConfigError(f"finetune.label_smoothing: FLYP trains with CLIP's contrastive loss, which has no "
                              f"label smoothing; set it to 0 (got {self.label_smoothing})")


FISHER_LABELS = ("sampled", "true")


@dataclass
class FisherConfig:
    """The Fisher-weighted merge (the WiSE-FT paper's appendix): a second weight-space path over the same alphas.

    Off by default: it costs two Fisher estimates (``examples`` per-example gradients each) and doubles the
    sweep's forward passes.

    Attributes:
        examples: Reference training examples (evaluation preprocessing, a seeded subset) each diagonal Fisher
            is estimated on; 0 switches the method off.
        labels: ``sampled`` (a label drawn from the model's own predictions per example: the Fisher of the
            WiSE-FT code) or ``true`` (the data's labels: the empirical Fisher).
        floor: Lower bound on every Fisher value (the WiSE-FT code's ``--fisher_floor``).
        chunk: Per-example gradients held at once (memory: ``chunk`` copies of the parameters).
    """

    examples: int = 0
    labels: str = "sampled"
    floor: float = 1e-8
    chunk: int = 16

    def __post_init__(self) -> None:
        if self.examples < 0:
            raise ConfigError(f"wiseft.fisher.examples: must be 0 (off) or positive, got {self.examples}")
        if self.labels not in FISHER_LABELS:
            raise ConfigError(f"wiseft.fisher.labels: must be one of {FISHER_LABELS}, got '{self.labels}'")
        _positive("wiseft.fisher.floor", self.floor)
        if self.chunk <= 0:
            raise ConfigError(f"wiseft.fisher.chunk: must be positive, got {self.chunk}")


@dataclass
class WiseftConfig:
    """The post-fit sweep.

    Attributes:
        alphas: Mixing coefficients, strictly increasing, within [0, 1].
        select_on: ``val`` chooses alpha on the held-out reference data (the default and the honest choice);
            ``reference`` chooses on the reported reference column, as the paper's "optimal alpha" row does.
        select_within_se: The smallest alpha whose held-out accuracy is within this many binomial standard errors
            of the best one is chosen (the one-standard-error rule: differences within the held-out set's noise
            are ties, and a tie goes to the model closer to zero-shot, the more robust one); 0 chooses the best.
        save_checkpoints: Write zero-shot, fine-tuned and chosen-alpha weights as safetensors.
        upload_checkpoint: Also log the chosen-alpha checkpoint to W&B as a model artifact (needs
            ``save_checkpoints`` and the W&B logger).
        batch_cache_mb: Decoded evaluation images held at once (on the evaluation device) while every alpha is
            evaluated on them; each image is decoded once per sweep whatever this is, larger means fewer
            in-place interpolations.
        ensemble: Also evaluate the output-space ensemble ``(1 - alpha) * logits_zeroshot + alpha *
            logits_finetuned`` over the same grid (the paper's comparison; no extra forward pass).
        calibration_bins: Bins of the expected calibration error reported next to top-1 (``ece_*``, with the NLL
            in ``nll_*``); 0 reports top-1 only.
        fisher: The Fisher-weighted merge (rows of method ``fisher``), off unless ``fisher.examples > 0``.
    """

    alphas: list[float] = field(default_factory=lambda: list(DEFAULT_ALPHAS))
    select_on: str = "val"
    select_within_se: float = 1.0
    save_checkpoints: bool = True
    upload_checkpoint: bool = False
    batch_cache_mb: int = 1024
    ensemble: bool = True
    calibration_bins: int = 15
    fisher: FisherConfig = field(default_factory=FisherConfig)

    def __post_init__(self) -> None:
        if not self.alphas:
            raise ConfigError("wiseft.alphas: the alpha grid is empty")
        for a in self.alphas:
            if not 0.0 <= a <= 1.0:
                raise ConfigError(f"wiseft.alphas: alpha {a} is outside [0, 1]")
        for a, b in zip(self.alphas, self.alphas[1:], strict=False):
            if b <= a:
                raise ConfigError(f"wiseft.alphas: the grid must be strictly increasing, got {a} then {b}")
        if self.batch_cache_mb <= 0:
            raise ConfigError(f"wiseft.batch_cache_mb: must be positive, got {self.batch_cache_mb}")
        if self.select_on not in ("val", "reference"):
            raise ConfigError(f"wiseft.select_on: must be 'val' or 'reference', got '{self.select_on}'")
        if not 0.0 <= self.select_within_se <= 10.0:
            raise ConfigError(f"wiseft.select_within_se: must be within [0, 10] standard errors, got "
                              f"{self.select_within_se}")
        if self.calibration_bins < 0:
            raise ConfigError(f"wiseft.calibration_bins: must be 0 (off) or positive, got {self.calibration_bins}")


@dataclass
class JobConfig:
    """The top-level values of a ``train`` config (``conf/train.yaml``).

    Attributes:
        seed: Seeds fine-tuning (order, augmentation, held-out split).
        ckpt_path: A Lightning checkpoint to start from, into a new run folder.
        auto_resume: Continue from the newest checkpoint in the run folder when relaunched into it.
        log_level: The lowest level of log lines shown on the terminal besides wiseft's own progress lines
            (``train.log`` always gets INFO).
    """

    seed: int = 0
    ckpt_path: str | None = None
    auto_resume: bool = True
    log_level: str = "WARNING"

    def __post_init__(self) -> None:
        _log_level(self.log_level)
        if self.ckpt_path is not None and not self.ckpt_path.strip():
            raise ConfigError("ckpt_path: empty; give a checkpoint file or null")


@dataclass
class EvaluateJobConfig:
    """The top-level values of an ``evaluate`` config (``conf/evaluate.yaml``)."""

    finetuned: str | None = None
    zeroshot: str | None = None
    device: str = "auto"
    seed: int = 0
    log_level: str = "WARNING"

    def __post_init__(self) -> None:
        _log_level(self.log_level)


@dataclass
class Settings:
    """The validated, typed view of a composed ``train`` config."""

    model: ModelConfig
    data: DataConfig
    finetune: FinetuneConfig
    wiseft: WiseftConfig
    seed: int
    ckpt_path: str | None = None
    auto_resume: bool = True


def to_settings(cfg: DictConfig) -> Settings:
    """Check every value of a composed config and return it typed.

    Raises:
        ConfigError: One line naming the key and the bad value.
    """
    sections = {key: _typed(key, schema, cfg[key]) for key, schema in (
        ("model", ModelConfig), ("data", DataConfig), ("finetune", FinetuneConfig), ("wiseft", WiseftConfig))}
    sections["data"].shifts = {name: _typed(f"data.shifts.{name}", DatasetSpec, node)
                               for name, node in sections["data"].shifts.items()}
    job = typed_top_level(cfg, JobConfig)
    return Settings(**sections, seed=job.seed, ckpt_path=job.ckpt_path, auto_resume=job.auto_resume)


def typed_top_level(cfg: DictConfig, schema: type) -> Any:
    """The top-level values of ``cfg`` that ``schema`` (a dataclass of scalars) names, checked and typed.

    Raises:
        ConfigError: One line naming the key and the bad value.
    """
    values = {}
    for name in (f.name for f in fields(schema)):
        if name in cfg and not OmegaConf.is_missing(cfg, name):  # a missing value: the job says what to give
            try:
                values[name] = OmegaConf.select(cfg, name)
            except Exception as err:  # an interpolation that does not resolve
                raise ConfigError(f"{name}: {str(err).splitlines()[0]}") from err
    return _typed("", schema, values)


def _typed(key: str, schema: type, node: Any) -> Any:
    try:
        if OmegaConf.is_config(node):  # resolve interpolations against the whole config first
            node = OmegaConf.to_container(node, resolve=True)
        return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(schema), node))
    except ConfigError:
        raise
    except Exception as err:  # OmegaConf's own messages span several lines; the first names the value
        inner = getattr(err, "full_key", None)  # the offending key inside the section, when OmegaConf knows it
        where = ".".join(k for k in (key, str(inner) if inner else "") if k)
        raise ConfigError(f"{where}: {str(err).splitlines()[0]}") from err


ASSETS_DIR = Path(__file__).parents[1] / "assets"


def asset_path(name: str) -> str:
    """Absolute path of a file shipped in ``wiseft/assets`` (the ``${wiseft_asset:NAME}`` resolver)."""
    return str(ASSETS_DIR / name)


def register_configs() -> None:
    """Store the schemas as ``<group>/schema`` so each group's YAML can extend them."""
    cs = ConfigStore.instance()
    cs.store(group="model", name="schema", node=ModelConfig)
    cs.store(group="data", name="schema", node=DataConfig)
    cs.store(group="finetune", name="schema", node=FinetuneConfig)
    cs.store(group="wiseft", name="schema", node=WiseftConfig)
    OmegaConf.register_new_resolver("wiseft_asset", asset_path, replace=True)
    # Reviewing: effective-robustness baselines, and W&B group/name for the jobs of one Hydra sweep.
    from wiseft.review.multirun import sweep_group, sweep_job_name
    from wiseft.review.robustness import RobustnessConfig

    cs.store(group="robustness", name="schema", node=RobustnessConfig)
    OmegaConf.register_new_resolver("wiseft_sweep_group", sweep_group, replace=True)
    OmegaConf.register_new_resolver("wiseft_sweep_job", sweep_job_name, replace=True)


register_configs()
