"""Tiny random classifiers for tests and CPU smoke runs: no weights to download, identical on every machine.

Two of them (tiny_a, tiny_b: different seeds) give the disagreement task two classifiers that really disagree.
"""

from __future__ import annotations

import torch
from torch import nn

from digin_cli.classifiers.base import Classifier
from digin_cli.classifiers.classnames import imagenet_class_names

_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)
# Default init gives near-uniform, image-independent softmax over 1000 classes. Larger conv weights make the
# features depend on the image, a larger head spreads the logits, and a 2x2 pooled grid (instead of one global
# average) keeps spatial layout: together an optimiser can move p(y) from ~0.001 to >0.5 in a few steps.
_CONV_GAIN = 2.0
_HEAD_GAIN = 5.0
_POOL = 2


class _TinyNet(nn.Module):
    def __init__(self, width: int, num_classes: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(3, width, 3, stride=2, padding=1),
            nn.GELU(),
            nn.Conv2d(width, 2 * width, 3, stride=2, padding=1),
            nn.GELU(),
            nn.AdaptiveAvgPool2d(_POOL),
            nn.Flatten(),
        )
        self.fc = nn.Linear(2 * width * _POOL * _POOL, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.body(x))


class TinyClassifier(Classifier):
    """conv-GELU-conv-GELU-2x2 pool-linear (features: ``8 * width``), random weights fixed by ``seed``."""

    def __init__(self, seed: int, width: int = 8, input_size: int = 32, num_classes: int = 1000) -> None:
        # fork_rng: building a classifier must not change the random stream the run's own sampling depends on.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            net = _TinyNet(width, num_classes)
            with torch.no_grad():
                for conv in (net.body[0], net.body[2]):
                    conv.weight.mul_(_CONV_GAIN)
                net.fc.weight.mul_(_HEAD_GAIN)
                net.fc.bias.mul_(_HEAD_GAIN)
        names = imagenet_class_names() if num_classes == 1000 else [f"class_{i}" for i in range(num_classes)]
        super().__init__(net, names, input_size, _IMAGENET_MEAN, _IMAGENET_STD, "bilinear")
        self.seed = seed

    @property
    def num_features(self) -> int:
        return self.model.fc.in_features

    def head(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self._linear(self.model.fc, "the tiny classifier")

    def _logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def _features(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.body(x)

    def _logits_and_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        f = self.model.body(x)
        return self.model.fc(f), f
