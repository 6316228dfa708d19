"""Keeping secrets (the W&B API key, tokens) out of everything a run writes.

A config can pull an environment variable in with ``${oc.env:WANDB_API_KEY}``; resolved, that value would land in
``config.yaml``, in every logger's hyperparameters and in error messages. :func:`redact` replaces, anywhere in a
nested structure, the values of secret-looking keys and every occurrence of a secret environment variable's value.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any

REDACTED = "<redacted>"

#: Environment variables and config keys whose values are secrets.
SECRET_NAME = re.compile(r"(?:^|[_.-])(?:api[_-]?key|token|secret|passw(?:or)?d|credentials?)(?:$|[_.-])",
                         re.IGNORECASE)
#: Shorter values are not treated as secrets (replacing them would mangle ordinary text).
MIN_SECRET_LENGTH = 8


def secret_values(environ: Mapping[str, str] | None = None) -> list[str]:
    """Values of the environment variables whose names look secret (``WANDB_API_KEY``, ``HF_TOKEN``...)."""
    environ = os.environ if environ is None else environ
    values = {v for k, v in environ.items() if SECRET_NAME.search(k) and len(v) >= MIN_SECRET_LENGTH}
    return sorted(values, key=len, reverse=True)  # longest first, so a secret containing another is fully hidden


def redact_text(text: str, secrets: list[str] | None = None) -> str:
    """``text`` with every secret value replaced by :data:`REDACTED`."""
    for secret in secret_values() if secrets is None else secrets:
        text = text.replace(secret, REDACTED)
    return text


def redact(obj: Any, secrets: list[str] | None = None) -> Any:
    """A copy of ``obj`` (dicts, lists, scalars) with secret-named keys' values and secret values redacted."""
    secrets = secret_values() if secrets is None else secrets
    if isinstance(obj, Mapping):
        return {k: (REDACTED if isinstance(k, str) and SECRET_NAME.search(k) and v not in (None, "")
                    else redact(v, secrets)) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return type(obj)(redact(v, secrets) for v in obj)
    if isinstance(obj, str):
        return redact_text(obj, secrets)
    return obj


def redacted_config(cfg: Any) -> Any:
    """A resolved OmegaConf config as plain containers, secrets redacted (what is written and logged)."""
    from omegaconf import OmegaConf

    return redact(OmegaConf.to_container(cfg, resolve=True))
