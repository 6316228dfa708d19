"""Where a model's pretrained weights come from, resolved offline-first, and which activation they need.

``model.pretrained`` is a tag of open_clip's registry (``openai``, ``laion2b_s34b_b79k``...), a local weights file,
or null; ``model.name`` may instead be ``local-dir:<folder>`` (open_clip's folder layout: ``open_clip_config.json``
and a weights file) or ``hf-hub:<repo>``.

Offline first: a tag's weights are looked up in the caches open_clip downloads into (the Hugging Face hub cache,
then its URL cache) before any network call. A download is tried only when allowed (``model.allow_download`` and
no ``HF_HUB_OFFLINE``); when the weights cannot be had, the run stops before anything is built, with one line that
says how to point at a local file.

QuickGELU: OpenAI's CLIP weights were trained with QuickGELU, but open_clip builds plain GELU for ``ViT-B-32`` +
``openai`` and only warns. Here the activation follows the weights: a tag that needs QuickGELU gets it, asking for
QuickGELU with weights trained without it is an error, and the built model is checked.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
import warnings
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import open_clip
import torch
from open_clip import pretrained as oc_pretrained
from open_clip.transformer import QuickGELU

from wiseft.errors import ConfigError

log = logging.getLogger(__name__)

LOCAL_DIR = "local-dir:"
HF_HUB = "hf-hub:"

#: Things that say "this is a file", as opposed to a pretrained tag such as "openai" or "laion2b_s34b_b79k".
WEIGHT_SUFFIXES = (".safetensors", ".pt", ".pth", ".bin", ".ckpt", ".npz")
#: Weights files open_clip looks for in a ``local-dir:`` folder.
LOCAL_DIR_PATTERNS = ("*.safetensors", "*.bin", "*.pth")
#: The tag's preprocessing keys, applied as open_clip applies them when it resolves a tag itself.
_PREPROCESS_KEYS = {"mean": "image_mean", "std": "image_std", "interpolation": "image_interpolation",
                    "resize_mode": "image_resize_mode"}
_TRUE = {"1", "ON", "YES", "TRUE"}


@dataclass(frozen=True)
class WeightsSource:
    """What to build and load.

    Attributes:
        name: The open_clip model name to build (``/`` normalised to ``-``; a ``local-dir:`` path expanded).
        checkpoint: Local weights file to load; ``None`` for random initialisation or for ``local-dir:``/``hf-hub:``
            names, which carry their own weights.
        tag: The pretrained tag the checkpoint belongs to, if any.
        quick_gelu: Build with QuickGELU; ``None`` where open_clip's config decides and cannot be checked here.
        preprocess: ``create_model_and_transforms`` keywords for the tag's image normalisation and resizing.
        weights_only: Load with ``torch.load(weights_only=True)``. Off only for TorchScript archives, which
            ``torch.load`` hands to ``torch.jit.load`` (its own restricted deserialiser, no arbitrary pickle) and
            refuses under ``weights_only``.
    """

    name: str
    checkpoint: str | None = None
    tag: str | None = None
    quick_gelu: bool | None = False
    preprocess: dict[str, Any] = field(default_factory=dict)
    weights_only: bool = True


def looks_like_file(pretrained: str) -> bool:
    """Whether ``model.pretrained`` is meant as a path rather than a tag."""
    return pretrained.endswith(WEIGHT_SUFFIXES) or "/" in pretrained or pretrained.startswith((".", "~"))


def downloads_allowed(allow_download: bool = True) -> bool:
    """Downloads are off when ``allow_download`` is false or ``HF_HUB_OFFLINE`` is set."""
    from huggingface_hub import constants

    return allow_download and not (constants.HF_HUB_OFFLINE or os.environ.get("HF_HUB_OFFLINE", "").upper() in _TRUE)


def arch_quick_gelu(name: str) -> bool:
    """Whether open_clip's config for architecture ``name`` builds QuickGELU."""
    return bool((open_clip.get_model_config(name) or {}).get("quick_gelu", False))


def is_torchscript_archive(path: str | Path) -> bool:
    """Whether ``path`` is a TorchScript archive, the format of OpenAI's original CLIP releases (``ViT-B-32.pt``).

    Only the zip directory is read: a TorchScript archive has a ``code/`` folder and a top-level ``constants.pkl``,
    a ``torch.save`` file has neither. ``constants.pkl`` is what ``torch.load`` itself checks before it hands a file
    to ``torch.jit.load``; a file with ``code/`` but without it would be unpickled as an ordinary checkpoint, so
    with ``weights_only=False`` it could run code: it does not count as TorchScript here.
    """
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        parts = [n.split("/")[1:] for n in archive.namelist()]
    return any(p[:1] == ["code"] for p in parts) and ["constants.pkl"] in parts


def quick_gelu_for(name: str, weights_need_it: bool | None, force: bool, source: str) -> bool:
    """Decide the activation: QuickGELU when the weights were trained with it, never silently otherwise.

    Args:
        name: open_clip architecture.
        weights_need_it: ``True``/``False`` when the weights' training activation is known, ``None`` otherwise.
        force: ``model.force_quick_gelu``.
        source: Where the weights come from, for messages.

    Returns:
        Whether to build with QuickGELU.

    Raises:
        ConfigError: QuickGELU asked for, or built in, with weights known to be trained with plain GELU.
    """
    built_in = arch_quick_gelu(name)
    if weights_need_it is False and (force or built_in):
        key = "model.force_quick_gelu" if force else "model.name"
        raise ConfigError(f"{key}: {source} was trained with plain GELU, but '{name}' would be built with "
                          "QuickGELU; drop the -quickgelu suffix / set model.force_quick_gelu=false")
    if weights_need_it and not (force or built_in):
        log.warning("%s was trained with QuickGELU: building '%s' with QuickGELU (open_clip would build GELU and "
                    "only warn); name '%s-quickgelu' to make this explicit", source, name, name)
        return True
    return force or built_in


@contextlib.contextmanager
def quick_gelu_mismatch_is_an_error() -> Iterator[None]:
    """Turn open_clip's QuickGELU-mismatch warning into a :class:`ConfigError` (a second line of defence)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message="QuickGELU mismatch")
        try:
            yield
        except UserWarning as err:
            if "QuickGELU mismatch" not in str(err):
                raise
            raise ConfigError(f"model: {err}; set model.force_quick_gelu or use the -quickgelu model") from err


def check_activation(model: torch.nn.Module, quick_gelu: bool | None, name: str) -> None:
    """Check the built model's activation is the one decided (``None``: nothing to check).

    Raises:
        RuntimeError: A mismatch (open_clip ignored the setting).
    """
    if quick_gelu is None:
        return
    has_quick_gelu = any(isinstance(m, QuickGELU) for m in model.modules())
    if quick_gelu and not has_quick_gelu:
        raise RuntimeError(f"'{name}' was built without QuickGELU although its weights need it")


def _hf_filenames(filename: str) -> list[str]:
    # open_clip tries the safetensors twin of a .bin/.pth file first (open_clip.pretrained._get_safe_alternatives).
    names = []
    if filename == oc_pretrained.HF_WEIGHTS_NAME:
        names.append(oc_pretrained.HF_SAFE_WEIGHTS_NAME)
    elif filename.endswith((".bin", ".pth")):
        names.append(filename[:-4] + ".safetensors")
    return [*names, filename]


def _url_cache_dir(cache_dir: str | None) -> Path:
    return Path(cache_dir or "~/.cache/clip").expanduser()


def cache_locations(tag_cfg: dict[str, Any], cache_dir: str | None) -> list[str]:
    """Human-readable places :func:`cached_checkpoint` looks (for error messages)."""
    from huggingface_hub import constants

    places = []
    if tag_cfg.get("hf_hub"):
        places.append(f"hf-hub {os.path.split(tag_cfg['hf_hub'])[0]} in {cache_dir or constants.HF_HUB_CACHE}")
    if tag_cfg.get("url"):
        places.append(str(_url_cache_dir(cache_dir) / os.path.basename(tag_cfg["url"])))
    return places


def cached_checkpoint(tag_cfg: dict[str, Any], cache_dir: str | None = None) -> str | None:
    """The local copy of a tag's weights, if open_clip has downloaded it before; no network access.

    Args:
        tag_cfg: ``open_clip.get_pretrained_cfg(name, tag)``.
        cache_dir: ``model.cache_dir`` (open_clip's ``cache_dir``); ``None`` for the default caches.
    """
    if tag_cfg.get("file"):
        return tag_cfg["file"] if Path(tag_cfg["file"]).is_file() else None
    if tag_cfg.get("hf_hub") and oc_pretrained.has_hf_hub():
        from huggingface_hub import try_to_load_from_cache

        model_id, filename = os.path.split(tag_cfg["hf_hub"])
        for name in _hf_filenames(filename or oc_pretrained.HF_WEIGHTS_NAME):
            path = try_to_load_from_cache(model_id, name, cache_dir=cache_dir)
            if isinstance(path, str) and Path(path).is_file():
                return path
    if tag_cfg.get("url"):
        path = _url_cache_dir(cache_dir) / os.path.basename(tag_cfg["url"])
        if path.is_file():
            return str(path)
    return None


def download_checkpoint(tag_cfg: dict[str, Any], cache_dir: str | None = None) -> str:
    """Download a tag's weights into open_clip's cache; an interrupted download leaves no file behind."""
    if tag_cfg.get("hf_hub") and oc_pretrained.has_hf_hub():
        # huggingface_hub downloads to a temporary '.incomplete' file and renames it when done.
        model_id, filename = os.path.split(tag_cfg["hf_hub"])
        return oc_pretrained.download_pretrained_from_hf(model_id, filename=filename or None, cache_dir=cache_dir)
    target_dir = _url_cache_dir(cache_dir)
    target_dir.mkdir(parents=True, exist_ok=True)
    # open_clip writes straight to the final name; download next to it and rename once complete.
    with tempfile.TemporaryDirectory(dir=target_dir, prefix=".download-") as tmp:
        path = oc_pretrained.download_pretrained_from_url(tag_cfg["url"], cache_dir=tmp)
        final = target_dir / os.path.basename(path)
        os.replace(path, final)
    return str(final)


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0] if text else ''}"


def _tag_checkpoint(name: str, tag: str, tag_cfg: dict[str, Any], cache_dir: str | None,
                    allow_download: bool, fetch: bool) -> str | None:
    path = cached_checkpoint(tag_cfg, cache_dir)
    if path is not None:
        log.info("weights of %s/%s found in the local cache: %s", name, tag, path)
        return path
    if not fetch and downloads_allowed(allow_download):
        return None
    if not downloads_allowed(allow_download):
        reason = "downloads are off (model.allow_download=false)" if not allow_download else "HF_HUB_OFFLINE is set"
    else:
        log.info("weights of %s/%s are not cached; downloading", name, tag)
        try:
            return download_checkpoint(tag_cfg, cache_dir)
        except Exception as err:  # no network, proxy, HTTP error...: all mean "not available here"
            reason = f"the download failed ({_first_line(err)})"
    looked = "; ".join(cache_locations(tag_cfg, cache_dir)) or "no cache"
    raise ConfigError(f"model.pretrained: weights '{tag}' of '{name}' are not available offline (looked in: {looked}) "
                      f"and {reason}; fetch the file elsewhere and set model.pretrained=/path/to/weights.safetensors "
                      "(or model.cache_dir=<a cache that has it>)")


def _local_dir(name: str, pretrained: str | None, force_quick_gelu: bool) -> WeightsSource:
    folder = Path(name.removeprefix(LOCAL_DIR)).expanduser()
    if pretrained:
        raise ConfigError(f"model.pretrained: must be null with model.name='{name}' (the folder holds the weights), "
                          f"got '{pretrained}'")
    config_path = folder / "open_clip_config.json"
    if not config_path.is_file():
        raise ConfigError(f"model.name: '{name}' needs a folder holding open_clip_config.json; '{folder}' has none")
    try:
        model_cfg = json.loads(config_path.read_text())["model_cfg"]
    except (ValueError, KeyError, TypeError) as err:
        raise ConfigError(f"model.name: '{config_path}' is not an open_clip config with a 'model_cfg' "
                          f"({_first_line(err)})") from err
    if not any(any(folder.glob(p)) for p in LOCAL_DIR_PATTERNS):
        # open_clip would only log a warning and build a randomly initialised model.
        raise ConfigError(f"model.name: '{folder}' holds no weights file ({', '.join(LOCAL_DIR_PATTERNS)})")
    quick_gelu = force_quick_gelu or bool(model_cfg.get("quick_gelu", False))
    return WeightsSource(f"{LOCAL_DIR}{folder}", quick_gelu=quick_gelu)


def _hf_hub(name: str, cache_dir: str | None, allow_download: bool, fetch: bool) -> WeightsSource:
    from huggingface_hub import try_to_load_from_cache

    repo = name.removeprefix(HF_HUB)
    if isinstance(try_to_load_from_cache(repo, "open_clip_config.json", cache_dir=cache_dir), str):
        return WeightsSource(name, quick_gelu=None)
    if not fetch and downloads_allowed(allow_download):
        return WeightsSource(name, quick_gelu=None)
    if not downloads_allowed(allow_download):
        raise ConfigError(f"model.name: '{name}' is not in the Hugging Face cache and downloads are off; fetch it "
                          "elsewhere and use model.name=local-dir:/path/to/folder")
    try:
        oc_pretrained.download_pretrained_from_hf(repo, filename="open_clip_config.json", cache_dir=cache_dir)
        oc_pretrained.download_pretrained_from_hf(repo, cache_dir=cache_dir)
    except Exception as err:
        raise ConfigError(f"model.name: '{name}' could not be downloaded ({_first_line(err)}); fetch it elsewhere "
                          "and use model.name=local-dir:/path/to/folder") from err
    return WeightsSource(name, quick_gelu=None)


def resolve_weights(
    name: str,
    pretrained: str | None = None,
    *,
    cache_dir: str | None = None,
    force_quick_gelu: bool = False,
    allow_download: bool = True,
    fetch: bool = True,
) -> WeightsSource:
    """Find the weights (downloading only if allowed and needed) and decide the activation.

    Args:
        name: open_clip architecture, ``local-dir:<folder>`` or ``hf-hub:<repo>``.
        pretrained: A tag, a weights file, or ``None``.
        cache_dir: open_clip's download cache (``None``: its defaults).
        force_quick_gelu: ``model.force_quick_gelu``.
        allow_download: Whether a missing tag may be downloaded.
        fetch: ``False`` checks everything but downloads nothing: a tag that is not cached but may be downloaded
            then has ``checkpoint=None`` (a cheap first check, before the data is looked at).

    Raises:
        ConfigError: Unknown model or tag, missing file or folder, weights not available offline, or a QuickGELU
            setting that contradicts the weights (one line naming the key).
    """
    if name.startswith(LOCAL_DIR):
        return _local_dir(name, pretrained, force_quick_gelu)
    if name.startswith(HF_HUB):
        if pretrained:
            raise ConfigError(f"model.pretrained: must be null with model.name='{name}', got '{pretrained}'")
        return _hf_hub(name, cache_dir, allow_download, fetch)
    name = name.replace("/", "-")  # "ViT-B/32", as OpenAI and the reference code spell it
    if name not in open_clip.list_models():
        known = ", ".join(m for m in open_clip.list_models() if m.startswith("ViT-"))[:200]
        raise ConfigError(f"model.name: unknown open_clip model '{name}' (known include: {known}, ...)")
    if not pretrained:
        return WeightsSource(name, quick_gelu=quick_gelu_for(name, None, force_quick_gelu, "random initialisation"))
    tag_cfg = oc_pretrained.get_pretrained_cfg(name, pretrained)
    if tag_cfg:
        checkpoint = _tag_checkpoint(name, pretrained, tag_cfg, cache_dir, allow_download, fetch)
        quick_gelu = quick_gelu_for(name, bool(tag_cfg.get("quick_gelu", False)), force_quick_gelu,
                                    f"'{pretrained}' ({name})")
        preprocess = {arg: tag_cfg[key] for key, arg in _PREPROCESS_KEYS.items() if key in tag_cfg}
        return WeightsSource(name, checkpoint, pretrained, quick_gelu, preprocess)
    path = Path(pretrained).expanduser()
    if path.is_file():
        # OpenAI's original releases are TorchScript archives trained with QuickGELU; other files do not say.
        scripted = is_torchscript_archive(path)
        quick_gelu = quick_gelu_for(name, True if scripted else None, force_quick_gelu, f"'{path}'")
        return WeightsSource(name, str(path), None, quick_gelu, weights_only=not scripted)
    if looks_like_file(pretrained):
        raise ConfigError(f"model.pretrained: weights file '{pretrained}' does not exist")
    tags = ", ".join(open_clip.list_pretrained_tags_by_model(name)) or "none"
    raise ConfigError(f"model.pretrained: '{pretrained}' is neither a pretrained tag of '{name}' (known: {tags}) nor "
                      "a weights file")
