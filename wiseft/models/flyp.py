"""``finetune=flyp``: FLYP (Goyal et al., CVPR 2023, *Finetune like you pretrain*).

Both towers are fine-tuned with CLIP's own contrastive loss (open_clip's ``ClipLoss``), each image paired with a
caption of its class: the class name in one of the prompt templates, drawn uniformly per image and per step. As
in the reference code, other images of the same class in the batch are ordinary negatives, and the classification
head is not trained but rebuilt from the fine-tuned text tower (all templates, as the zero-shot head) whenever it
is used: each validation epoch, at the end of training and, in the sweep, at every alpha
(:class:`~wiseft.methods.text_head.HeadFromText`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from open_clip.loss import ClipLoss

from wiseft.config.schema import FinetuneConfig
from wiseft.models.module import WiSEFTModule
from wiseft.models.text_head import TextHeadClassifier, caption


class FLYPModule(WiSEFTModule):
    """Fine-tunes a :class:`~wiseft.models.text_head.TextHeadClassifier`'s image and text towers contrastively."""

    model: TextHeadClassifier

    def __init__(self, model: TextHeadClassifier, finetune: FinetuneConfig) -> None:
        """Args:
        model: Image tower, text tower and the zero-shot head (built by the factory, passed in).
        finetune: The recipe (``label_smoothing`` does not apply).
        """
        super().__init__(model, finetune)
        # Every class x template caption tokenised once: a step only indexes this table.
        texts = [caption(t, c) for c in model.classnames for t in model.templates]
        tokens = model.tokenize(texts)
        self.register_buffer("caption_tokens", tokens.view(len(model.classnames), len(model.templates), -1),
                             persistent=False)
        self.loss_fn = ClipLoss()

    def setup(self, stage: str) -> None:
        if self._trainer is not None and self.trainer.world_size > 1:
            # The contrastive batch is the global one, as in the reference code's single process: features are
            # gathered from every process (gradients flow through this process's own).
            self.loss_fn = ClipLoss(local_loss=False, gather_with_grad=False, cache_labels=True,
                                    rank=self.global_rank, world_size=self.trainer.world_size)

    def sample_captions(self, labels: torch.Tensor) -> torch.Tensor:
        """Token ids of one caption per label: its class name in a uniformly drawn template.

        Draws from torch's global CPU generator, which :class:`~wiseft.runtime.exact_resume.StepSeed` reseeds every
        step, so a resumed run draws the same captions.
        """
        template = torch.randint(self.caption_tokens.shape[1], tuple(labels.shape))
        return self.caption_tokens[labels, template.to(labels.device)]

    def contrastive_loss(self, images: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """open_clip's ``ClipLoss`` between the images and their captions, at the model's learnt temperature."""
        image_features = F.normalize(self.model.features(images), dim=-1)
        # Captions repeat within a batch (few classes, few templates): encode each distinct one once.
        unique, inverse = torch.unique(tokens, dim=0, return_inverse=True)
        text_features = F.normalize(self.model.encode_text(unique), dim=-1)[inverse]
        return self.loss_fn(image_features, text_features, self.model.logit_scale.exp())

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        images, labels = batch
        loss = self.contrastive_loss(images, self.sample_captions(labels))
        self.log("train/loss", loss, prog_bar=True)
        self.log("train/logit_scale", self.model.logit_scale.exp())
        self.log("train/lr", self.optimizers().param_groups[0]["lr"])
        return loss

    def on_validation_epoch_start(self) -> None:
        self.model.rebuild_head()

    def on_train_end(self) -> None:
        # The fine-tuned weights the sweep snapshots carry the head of their own text tower.
        self.model.rebuild_head()
