"""The ``toy`` dataset kind: domains of the built-in synthetic world (see :mod:`wiseft.toy.world`)."""

from __future__ import annotations

from pathlib import Path

from wiseft.config.schema import DatasetSpec
from wiseft.data.registry import DatasetKind, register_dataset_kind
from wiseft.errors import ConfigError
from wiseft.toy import world

REFERENCE_SPLITS = ("train", "val", "test")


@register_dataset_kind("toy")
class ToyKind(DatasetKind):
    """One domain of the synthetic world, generated under ``root`` on first use.

    Options: ``domain`` (``reference``, ``v2``, ``sketch``, ``rendition``, ``objectnet``, ``hard``), ``split``
    (``train``/``val``/``test``, reference only), ``seed`` and ``scale`` (multiplies every image count).
    """

    def _world(self, spec: DatasetSpec) -> Path:
        # All labelled domains at once (one process pool); the web corpus is only for pretraining.
        return world.ensure_world(Path(spec.root).expanduser(), seed=int(spec.options.get("seed", 0)),
                                  scale=float(spec.options.get("scale", 1.0)), domains=world.LABELLED_DOMAINS)

    def prepare(self, spec: DatasetSpec) -> None:
        self._world(spec)

    def root(self, spec: DatasetSpec) -> Path:
        domain = spec.options.get("domain")
        if domain not in world.LABELLED_DOMAINS:
            raise ConfigError(f"options.domain: unknown toy domain '{domain}' "
                              f"(known: {', '.join(world.LABELLED_DOMAINS)})")
        path = self._world(spec) / domain
        if domain == "reference":
            split = spec.options.get("split")
            if split not in REFERENCE_SPLITS:
                raise ConfigError(f"options.split: the toy reference domain has splits {REFERENCE_SPLITS}, "
                                  f"got '{split}'")
            path = path / split
        return path

