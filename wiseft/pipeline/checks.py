"""Every cheap check of a ``train`` job, in one place: before any model is built and before anything is written.

:func:`check_job` runs them in order of cost: config values and ``_target_``s (no torch), the ``trainer``,
``callbacks`` and ``logger`` groups (their arguments typed against the classes' signatures, then the objects
built), the model name and weights (a weights file's keys and shapes against the architecture, built on the meta
device), the checkpoint to resume from, whether the run folder may be continued, the data (layout, classes,
labels; the toy world is generated here on first use), and last a download of missing weights.

Under ``python train.py`` it runs in a Hydra callback (:mod:`wiseft.pipeline.hydra_checks`) before Hydra creates the
run folder, so bad input leaves nothing behind; :func:`checked_job` hands its result to :func:`~wiseft.pipeline.
train.train`, which otherwise (tests, DDP children, multirun jobs) runs the checks itself.
"""

from __future__ import annotations

import difflib
import inspect
import logging
import os
import re
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hydra
import lightning as L
from hydra.errors import InstantiationException
from omegaconf import DictConfig, OmegaConf
from pydantic import ConfigDict, TypeAdapter, ValidationError

from wiseft.config.preflight import preflight
from wiseft.config.schema import Settings
from wiseft.config.secrets import redacted_config
from wiseft.data.datamodule import WiSEFTDataModule
from wiseft.errors import ConfigError, one_line
from wiseft.io.safeload import load_torch_file
from wiseft.models.factory import check_model_args
from wiseft.models.zeroshot import resolve_templates
from wiseft.review.robustness import LinearFit, resolve_baselines
from wiseft.runtime.resume import check_same_run, select_resume_checkpoint

log = logging.getLogger(__name__)

#: Trainer arguments the job supplies itself (not read from ``cfg.trainer``).
JOB_TRAINER_ARGS = ("callbacks", "logger", "default_root_dir", "plugins")
#: Hydra's instantiation keys, not arguments of the target.
_HYDRA_KEYS = ("_target_", "_convert_", "_recursive_", "_partial_", "_args_")
_STRICT = ConfigDict(arbitrary_types_allowed=True, strict=True)


@dataclass
class CheckedJob:
    """What the checks found out, for the job to use.

    Attributes:
        settings: The typed config sections.
        datamodule: The data module, prepared (generated or fetched) and checked.
        baselines: The effective-robustness fits that apply to this run's result columns.
        ckpt_path: The checkpoint to resume from (``ckpt_path``, or the newest in the run folder), if any.
    """

    settings: Settings
    datamodule: WiSEFTDataModule
    baselines: dict[str, LinearFit]
    ckpt_path: Path | None


# --- typed arguments --------------------------------------------------------------------------------------------

def type_text(annotation: Any) -> str:
    """A readable name for a type annotation: ``int | None``, ``bool | 'warn' | None``, ``list[int]``."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        return " | ".join(dict.fromkeys(type_text(a) for a in typing.get_args(annotation)))
    if origin is typing.Literal:
        return " | ".join(repr(a) for a in typing.get_args(annotation))
    if annotation is type(None):
        return "None"
    if origin is None and isinstance(annotation, type):
        return annotation.__name__
    return re.sub(r"\b(?:typing|collections\.abc|[\w.]+\.)(?=\w+\b)", "", str(annotation))


def _annotations(target: Any) -> dict[str, Any]:
    try:
        return typing.get_type_hints(target.__init__ if inspect.isclass(target) else target)
    except Exception:  # annotations that do not evaluate here: leave the types to the target itself
        return {}


def _is_target_node(value: Any) -> bool:
    return isinstance(value, dict) and "_target_" in value


def check_arguments(target: Any, kwargs: dict[str, Any], key: str, name: str) -> None:
    """Check that every keyword is an argument of ``target`` (called ``name`` in messages) and has the type its
    annotation says.

    Values that are themselves ``_target_`` nodes are left to their own instantiation; annotations pydantic cannot
    check are skipped.

    Raises:
        ConfigError: ``<key>.<argument>: ...`` naming the argument and what is wrong.
    """
    parameters = inspect.signature(target).parameters
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())
    hints = _annotations(target)
    for arg, value in kwargs.items():
        if arg not in parameters:
            if takes_any:
                continue
            close = difflib.get_close_matches(arg, [p for p in parameters if p not in JOB_TRAINER_ARGS], n=1)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            raise ConfigError(f"{key}.{arg}: not an argument of {name}{hint}")
        annotation = hints.get(arg)
        if annotation is None or _is_target_node(value):
            continue
        try:
            TypeAdapter(annotation, config=_STRICT).validate_python(value)
        except ValidationError:
            raise ConfigError(f"{key}.{arg}: expected {type_text(annotation)}, got {value!r}") from None
        except Exception:  # pydantic cannot build a validator for this annotation: the target checks it
            continue


def _plain_kwargs(node: DictConfig) -> dict[str, Any]:
    kwargs = OmegaConf.to_container(node, resolve=True)
    assert isinstance(kwargs, dict)
    return {str(k): v for k, v in kwargs.items() if k not in _HYDRA_KEYS}


def _culprit(message: str, kwargs: dict[str, Any]) -> str | None:
    """The argument an error message names (``max_epochs``, `` `Trainer(devices=0)` ``), first in the message."""
    found = [(m.start(), arg) for arg in kwargs
             if (m := re.search(rf"(?<![\w.]){re.escape(arg)}(?!\w)", message, re.IGNORECASE))]
    return min(found)[1] if found else None


def _problem(err: BaseException, value: Any = None, has_value: bool = False) -> str:
    text = one_line(err)
    if has_value and repr(value) not in text and str(value) not in text:
        text += f" (got {value!r})"
    return text


def instantiate(node: DictConfig, key: str, **extra: Any) -> Any:
    """``hydra.utils.instantiate(node, **extra)`` with its arguments checked first and one-line errors.

    Raises:
        ConfigError: ``<key>[.<argument>]: <problem>``.
    """
    target_name = str(node.get("_target_"))
    try:
        target = hydra.utils.get_object(target_name)
    except Exception as err:
        raise ConfigError(f"{key}._target_: cannot import '{target_name}' ({one_line(err)})") from err
    kwargs = _plain_kwargs(node)
    check_arguments(target, kwargs, key, target_name)
    try:
        return hydra.utils.instantiate(node, **extra)
    except InstantiationException as err:
        cause = err.__cause__ or err
        arg = _culprit(one_line(cause), kwargs)
        where = f"{key}.{arg}" if arg else key
        raise ConfigError(f"{where}: {_problem(cause, kwargs.get(arg), arg is not None)}") from cause


def instantiate_group(cfg: DictConfig, group: str) -> list[Any]:
    """Instantiate every entry of a config group that names a ``_target_`` (``callbacks``, ``logger``).

    Raises:
        ConfigError: Naming the entry (and argument) that cannot be built.
    """
    node = cfg.get(group)
    if not node:
        return []
    return [instantiate(spec, f"{group}.{name}") for name, spec in node.items()
            if spec is not None and "_target_" in spec]


def configured_callbacks(cfg: DictConfig) -> list[Any]:
    """The ``callbacks`` group's callbacks, less a progress bar or model summary that the trainer switches off."""
    from lightning.pytorch.callbacks import ModelSummary, ProgressBar

    callbacks = instantiate_group(cfg, "callbacks")
    # Lightning refuses such a callback with its switch off; the switch is the user's last word.
    for switch, kind in (("enable_progress_bar", ProgressBar), ("enable_model_summary", ModelSummary)):
        if not cfg.trainer.get(switch, True):
            callbacks = [c for c in callbacks if not isinstance(c, kind)]
    return callbacks


# --- the trainer ------------------------------------------------------------------------------------------------

def trainer_plugins(cfg: DictConfig) -> list[Any]:
    """The configured ``trainer.plugins`` plus :class:`SafeCheckpointIO`, unless a checkpoint I/O is configured."""
    from lightning.fabric.plugins import CheckpointIO

    from wiseft.io.checkpoint_io import SafeCheckpointIO

    configured = cfg.trainer.get("plugins")
    if configured is None:
        configured = []
    elif not OmegaConf.is_list(configured):
        configured = [configured]
    plugins = [instantiate(p, f"trainer.plugins.{i}") if OmegaConf.is_dict(p) else p
               for i, p in enumerate(configured)]
    if not any(isinstance(p, CheckpointIO) for p in plugins):
        plugins.append(SafeCheckpointIO())
    return plugins


def build_trainer(cfg: DictConfig, callbacks: list[Any], loggers: list[Any], out_dir: str | Path) -> L.Trainer:
    """The ``lightning.Trainer`` of ``cfg.trainer``, its arguments typed and its errors one line.

    Raises:
        ConfigError: ``trainer.<argument>: <problem>``, the argument found from Lightning's message or, when the
            message names none, as the one argument whose default makes the error go away.
    """
    node = cfg.trainer
    kwargs = {k: v for k, v in _plain_kwargs(node).items() if k not in JOB_TRAINER_ARGS}
    check_arguments(L.Trainer, kwargs, "trainer", str(node.get("_target_", "lightning.Trainer")))
    job_args = {"callbacks": callbacks, "logger": loggers or False, "default_root_dir": str(out_dir),
                "plugins": trainer_plugins(cfg)}
    try:
        return hydra.utils.instantiate(node, **job_args)
    except InstantiationException as err:
        cause = err.__cause__ or err
        arg = _culprit(one_line(cause), kwargs) or _argument_at_fault(str(node._target_), kwargs, job_args)
        where = f"trainer.{arg}" if arg else "trainer"
        raise ConfigError(f"{where}: {_problem(cause, kwargs.get(arg), arg is not None)}") from cause


def _argument_at_fault(target: str, kwargs: dict[str, Any], job_args: dict[str, Any]) -> str | None:
    """The configured argument whose removal (Lightning's default instead) lets the Trainer be built."""
    for arg in kwargs:
        trial = OmegaConf.create({"_target_": target, **{k: v for k, v in kwargs.items() if k != arg}})
        try:
            hydra.utils.instantiate(trial, **job_args)
        except Exception:
            continue
        return arg
    return None


def checkpoint_dirs(callbacks: list[Any], out_dir: Path) -> list[Path]:
    """Where the configured callbacks write Lightning checkpoints (a relaunch resumes from the newest)."""
    from lightning.pytorch.callbacks import ModelCheckpoint

    dirs = [out_dir / "checkpoints" / "lightning"]
    dirs += [Path(cb.dirpath) for cb in callbacks if isinstance(cb, ModelCheckpoint) and cb.dirpath]
    return dirs


# --- the job ----------------------------------------------------------------------------------------------------

def run_baselines(cfg: DictConfig, settings: Settings) -> dict[str, LinearFit]:
    """The effective-robustness fits (``cfg.robustness``) that apply to this run's result columns."""
    node = cfg.get("robustness")
    config = OmegaConf.to_container(node, resolve=True) if node is not None else None
    shifts = [name for name, spec in settings.data.shifts.items() if spec.enabled]
    return resolve_baselines(config, settings.data.reference.name, shifts)


def check_job(cfg: DictConfig, output_dir: str | Path) -> CheckedJob:
    """Run every cheap check of a ``train`` config, cheapest first; write nothing into ``output_dir``.

    Raises:
        ConfigError, DataError, CheckpointError, PermissionError: One line naming the key or file.
    """
    settings = preflight(cfg, output_dir)
    resolve_templates(settings.data.templates)
    baselines = run_baselines(cfg, settings)
    out_dir = Path(output_dir)
    callbacks = configured_callbacks(cfg)
    build_trainer(cfg, callbacks, instantiate_group(cfg, "logger"), out_dir)

    m = settings.model
    model_args = {"config_file": m.config_file, "cache_dir": m.cache_dir, "force_quick_gelu": m.force_quick_gelu,
                  "allow_download": m.allow_download}
    check_model_args(m.name, m.pretrained, **model_args, fetch=False)
    check_same_run(out_dir, redacted_config(cfg))
    ckpt_path = select_resume_checkpoint(settings.ckpt_path, settings.auto_resume, out_dir,
                                         checkpoint_dirs(callbacks, out_dir))
    if ckpt_path is not None:
        load_torch_file(ckpt_path, "ckpt_path", mmap=True)  # truncated or unsafe: fail now, not after the build
    datamodule = WiSEFTDataModule(settings.data, seed=settings.seed)
    datamodule.prepare_data()
    datamodule.check()
    check_model_args(m.name, m.pretrained, **model_args)  # downloads a missing tag, once the data is known good
    return CheckedJob(settings, datamodule, baselines, ckpt_path)


#: Jobs checked by the Hydra callback before the run folder existed, by that folder's absolute path.
_checked: dict[str, CheckedJob] = {}


def remember(output_dir: str | Path, job: CheckedJob) -> None:
    """Keep ``job`` for the job that will run in ``output_dir`` (see :func:`checked_job`)."""
    _checked[os.path.abspath(output_dir)] = job


def checked_job(cfg: DictConfig) -> CheckedJob:
    """The checks of the job about to run in ``cfg.paths.output_dir``: the Hydra callback's, else run now."""
    out_dir = str(cfg.paths.output_dir)
    job = _checked.pop(os.path.abspath(out_dir), None)
    if job is None:
        return check_job(cfg, out_dir)
    log.debug("checks done before the run folder was created: reusing them (data scanned once)")
    return job
