"""The zero-shot classification head: class-name prompts through the text tower."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import open_clip
import torch

from wiseft.errors import ConfigError
from wiseft.models.classifier import ClassificationHead, ImageClassifier
from wiseft.runtime.progress_bars import track

Template = str | Callable[[str], str]

_CLASSES_PER_BATCH = 10


def _toy_templates() -> Sequence[Template]:
    from wiseft.toy.world import TEMPLATES

    return TEMPLATES


#: Named prompt sets, as providers so that a set's module is imported only when the set is used.
#: The OpenAI set is the 80 ImageNet templates of the CLIP paper.
TEMPLATE_SETS: dict[str, Callable[[], Sequence[Template]]] = {
    "openai_imagenet": lambda: open_clip.OPENAI_IMAGENET_TEMPLATES,
    "simple_imagenet": lambda: open_clip.SIMPLE_IMAGENET_TEMPLATES,
    "toy": _toy_templates,
}


def register_templates(name: str, templates: Sequence[Template]) -> None:
    """Make a prompt set available by name."""
    frozen = tuple(templates)
    TEMPLATE_SETS[name] = lambda: frozen


def resolve_templates(spec: str | Sequence[str]) -> Sequence[Template]:
    """Turn a config value into a list of templates.

    Args:
        spec: The name of a registered set, or a list of format strings each containing ``{}``.

    Raises:
        ConfigError: Unknown set name, empty list, or a string without ``{}``.
    """
    if isinstance(spec, str):
        if spec not in TEMPLATE_SETS:
            raise ConfigError(f"data.templates: unknown template set '{spec}' (known: {', '.join(TEMPLATE_SETS)})")
        return TEMPLATE_SETS[spec]()
    templates = list(spec)
    if not templates:
        raise ConfigError("data.templates: the template list is empty")
    for t in templates:
        if "{}" not in t:
            raise ConfigError(f"data.templates: template '{t}' has no '{{}}' for the class name")
    return templates


@torch.no_grad()
def zero_shot_weights(
    clip_model: torch.nn.Module,
    tokenizer: Callable,
    classnames: Sequence[str],
    templates: Sequence[Template],
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """Weights of the zero-shot linear head.

    Each class embedding is the mean over templates of the L2-normalised text embeddings, renormalised;
    the head multiplies by the model's temperature so that its logits equal CLIP's.

    Args:
        clip_model: open_clip model with ``encode_text`` and ``logit_scale``.
        tokenizer: The model's tokenizer.
        classnames: One name per class, in label order.
        templates: Prompt templates.
        device: Where to run the text tower.

    Returns:
        ``(num_classes, embed_dim)`` tensor equal to ``logit_scale.exp() * class_embeddings``.
    """
    classnames, templates = list(classnames), list(templates)
    chunks = [classnames[i:i + _CLASSES_PER_BATCH] for i in range(0, len(classnames), _CLASSES_PER_BATCH)]
    # open_clip's builder, one chunk of classes at a time so that the text tower's work shows as a progress bar.
    embeddings = torch.cat([
        open_clip.build_zero_shot_classifier(clip_model, tokenizer, chunk, templates,
                                             num_classes_per_batch=_CLASSES_PER_BATCH, device=device)
        for chunk in track(chunks, f"zero-shot head ({len(classnames)} classes x {len(templates)} prompts)")
    ], dim=1)  # (embed_dim, num_classes), columns unit-norm
    return clip_model.logit_scale.exp().detach() * embeddings.T


def zero_shot_classifier(
    clip_model: torch.nn.Module,
    tokenizer: Callable,
    classnames: Sequence[str],
    templates: Sequence[Template],
    device: torch.device | str = "cpu",
) -> ImageClassifier:
    """The zero-shot image classifier: CLIP's image tower and a head built from prompts (text tower dropped)."""
    weights = zero_shot_weights(clip_model, tokenizer, classnames, templates, device)
    return ImageClassifier(clip_model.visual, ClassificationHead(weights.cpu()))
