"""An image classifier that keeps CLIP's text tower and derives its head from it (FLYP).

FLYP fine-tunes both towers, so the classification head is not a free parameter: it is the zero-shot head of the
current text tower (class names x prompt templates, as :func:`~wiseft.models.zeroshot.zero_shot_weights`). The
classifier's state dict is an :class:`~wiseft.models.classifier.ImageClassifier`'s (``image_encoder.*``,
``head.*``) plus the text tower under ``text.*`` (open_clip's model without its image tower: token embedding,
transformer, projection and ``logit_scale``), so WiSE-FT interpolates both towers; whoever changes the text
tower's weights calls :meth:`TextHeadClassifier.rebuild_head`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import torch
from torch import nn

from wiseft.models.classifier import ClassificationHead, ImageClassifier
from wiseft.models.zeroshot import Template, zero_shot_weights

#: State-dict prefix of the text tower; a checkpoint holding such keys comes from a classifier of this kind.
TEXT_PREFIX = "text."


def has_text_tower(state_dict: Mapping[str, torch.Tensor]) -> bool:
    """Whether a classifier state dict holds a text tower (a FLYP checkpoint)."""
    return any(key.startswith(TEXT_PREFIX) for key in state_dict)


def caption(template: Template, classname: str) -> str:
    """One prompt: a format string's ``{}`` or a callable template (open_clip's OpenAI set) applied to the name."""
    return template.format(classname) if isinstance(template, str) else template(classname)


class TextHeadClassifier(ImageClassifier):
    """``head(image_encoder(x))`` with the head built from ``text``, the text tower that is trained with it.

    The head's parameters take no gradient: they are a function of the text tower, recomputed by
    :meth:`rebuild_head`.
    """

    def __init__(self, image_encoder: nn.Module, text: nn.Module, head: ClassificationHead, tokenizer: Callable,
                 classnames: Sequence[str], templates: Sequence[Template]) -> None:
        """Args:
        image_encoder: open_clip's ``model.visual``.
        text: The open_clip model without its image tower (``encode_text`` and ``logit_scale``).
        head: The current head (see :meth:`rebuild_head`).
        tokenizer: The model's tokenizer.
        classnames: One name per class, in label order.
        templates: The prompt templates the head averages over.
        """
        super().__init__(image_encoder, head)
        self.text = text
        self.head.requires_grad_(False)
        self.tokenizer = tokenizer
        self.classnames = list(classnames)
        self.templates = list(templates)

    @classmethod
    def from_clip(cls, clip_model: nn.Module, tokenizer: Callable, classnames: Sequence[str],
                  templates: Sequence[Template], head: ClassificationHead | None = None) -> TextHeadClassifier:
        """Split an open_clip model into the two towers (the model is taken over: its ``visual`` moves out).

        Args:
            clip_model: An open_clip ``CLIP``/``CustomTextCLIP``.
            tokenizer: Its tokenizer.
            classnames: One name per class, in label order.
            templates: Prompt templates.
            head: A head to start from; by default the zero-shot head of ``clip_model``'s text tower.
        """
        if head is None:
            head = ClassificationHead(zero_shot_weights(clip_model, tokenizer, classnames, templates).cpu())
        image_encoder = clip_model.visual
        # The text tower is the rest of the model: open_clip's encode_text never touches `visual`, and keeping the
        # model object keeps its encode_text (pooling, attention mask, projection) exactly as open_clip wrote it.
        del clip_model.visual
        return cls(image_encoder, clip_model, head, tokenizer, classnames, templates)

    @property
    def logit_scale(self) -> torch.Tensor:
        """CLIP's learnt log-temperature (a parameter of the text side)."""
        return self.text.logit_scale

    def encode_text(self, tokens: torch.Tensor) -> torch.Tensor:
        """Un-normalised text embeddings of tokenised captions."""
        return self.text.encode_text(tokens)

    def tokenize(self, texts: Sequence[str]) -> torch.Tensor:
        """Token ids of ``texts``, with the model's tokenizer."""
        return self.tokenizer(list(texts))

    @torch.no_grad()
    def head_weights(self, progress: bool = False) -> torch.Tensor:
        """The zero-shot head of the current text tower, computed where the tower lives, in eval mode."""
        was_training = self.text.training
        self.text.eval()
        try:
            return zero_shot_weights(self.text, self.tokenizer, self.classnames, self.templates,
                                     device=self.head.weight.device, progress=progress)
        finally:
            self.text.train(was_training)

    @torch.no_grad()
    def rebuild_head(self, progress: bool = False) -> None:
        """Write the current text tower's zero-shot head into ``head`` (bias zero)."""
        self.head.weight.copy_(self.head_weights(progress))
        self.head.bias.zero_()
