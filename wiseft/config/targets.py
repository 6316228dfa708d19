"""Which ``_target_`` a config may instantiate: this package and the Lightning components it is built on.

``hydra.utils.instantiate`` imports and calls whatever a config names, so ``_target_: os.system`` in a config or
on the command line would run a shell command. Every ``_target_`` in the composed config is checked against this
allow-list before anything is instantiated.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from omegaconf import DictConfig, OmegaConf

from wiseft.errors import ConfigError

#: Module prefixes (ending in ``.``) and exact names that configs may instantiate.
ALLOWED_TARGETS: tuple[str, ...] = (
    "wiseft.",
    "lightning.Trainer",
    "lightning.pytorch.Trainer",
    "lightning.pytorch.trainer.Trainer",
    "lightning.pytorch.callbacks.",
    "lightning.pytorch.loggers.",
    "lightning.pytorch.strategies.",
    "lightning.pytorch.plugins.",
    "lightning.pytorch.profilers.",
    "lightning.pytorch.accelerators.",
    "lightning.fabric.plugins.environments.",
    "datetime.timedelta",
)


def target_allowed(target: str) -> bool:
    """Whether ``target`` is in :data:`ALLOWED_TARGETS` (prefix match for entries ending in ``.``)."""
    return any(target.startswith(a) if a.endswith(".") else target == a for a in ALLOWED_TARGETS)


def iter_targets(node: Any, where: str = "") -> Iterator[tuple[str, Any]]:
    """``(key, value)`` of every ``_target_`` in a plain (unresolved) container."""
    if isinstance(node, dict):
        items = [(str(k), v) for k, v in node.items()]
    elif isinstance(node, list):
        items = [(str(i), v) for i, v in enumerate(node)]
    else:
        return
    for key, child in items:
        path = f"{where}.{key}" if where else key
        if key == "_target_":
            yield path, child
        else:
            yield from iter_targets(child, path)


def check_targets(cfg: DictConfig, skip: tuple[str, ...] = ("hydra",)) -> None:
    """Raise unless every ``_target_`` in ``cfg`` is allowed.

    Args:
        cfg: The composed config.
        skip: Top-level keys not instantiated by this package (Hydra's own node).

    Raises:
        ConfigError: Naming the key and the refused target.
    """
    tree = OmegaConf.to_container(cfg, resolve=False)
    for key, node in tree.items():
        if key in skip:
            continue
        for path, target in iter_targets(node, str(key)):
            if isinstance(target, str) and "${" in target:
                target = OmegaConf.select(cfg, path, throw_on_missing=False)
            if not isinstance(target, str) or not target_allowed(target):
                raise ConfigError(f"{path}: refusing to instantiate '{target}'; a config may only name classes of "
                                  "wiseft or Lightning's callbacks, loggers, strategies, plugins and profilers")
