"""Image classifier = CLIP image encoder + linear head on L2-normalised features."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class ClassificationHead(nn.Linear):
    """Linear layer on L2-normalised features (bias zero at initialisation, as in the reference code)."""

    def __init__(self, weights: torch.Tensor, normalize: bool = True) -> None:
        """Args:
        weights: ``(num_classes, embed_dim)`` initial weights, e.g. from the zero-shot builder.
        normalize: Normalise the input features to unit norm first.
        """
        num_classes, embed_dim = weights.shape
        super().__init__(embed_dim, num_classes)
        self.normalize = normalize
        with torch.no_grad():
            self.weight.copy_(weights)
            self.bias.zero_()

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        if self.normalize:
            features = F.normalize(features, dim=-1)
        return super().forward(features)


class ImageClassifier(nn.Module):
    """The module that is fine-tuned and interpolated: ``head(image_encoder(x))``.

    The text tower is not part of it; it only served to build the head.
    """

    def __init__(self, image_encoder: nn.Module, head: ClassificationHead) -> None:
        """Args:
        image_encoder: open_clip's ``model.visual`` (returns projected embeddings).
        head: The classification head.
        """
        super().__init__()
        self.image_encoder = image_encoder
        self.head = head

    @property
    def num_classes(self) -> int:
        """Number of output classes."""
        return self.head.out_features

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """Un-normalised image embeddings."""
        return self.image_encoder(images)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(images))
