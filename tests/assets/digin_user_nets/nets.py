"""Networks as a user writes them: plain nn.Modules with their own forward, unknown to digin."""

import torch
from torch import nn


class SmallNet(nn.Module):
    """conv-GELU-conv-GELU -> avgpool -> fc; ``post='log_softmax'`` makes the output no linear map of the features."""

    def __init__(self, num_classes: int = 10, width: int = 8, post: str | None = None) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, width, 3, stride=2, padding=1), nn.GELU(),
                                      nn.Conv2d(width, 2 * width, 3, stride=2, padding=1), nn.GELU())
        self.avgpool = nn.AdaptiveAvgPool2d(2)
        self.fc = nn.Linear(8 * width, num_classes)
        self.post = post

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.fc(torch.flatten(self.avgpool(self.features(x)), 1))
        return logits.log_softmax(-1) if self.post == "log_softmax" else logits


def small_net(num_classes: int = 10, seed: int = 0, **kwargs) -> SmallNet:
    """A seeded SmallNet whose weights are large enough for the tiny CLI runs to move its probabilities."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = SmallNet(num_classes, **kwargs)
        with torch.no_grad():
            for m in net.modules():
                if isinstance(m, (nn.Conv2d, nn.Linear)):
                    m.weight.mul_(3.0)
    return net


class ConvNet(nn.Module):
    """A fully convolutional classifier (1x1 conv head, then global pooling): no nn.Linear anywhere."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.GELU())
        self.head = nn.Conv2d(8, num_classes, 1)
        self.pool = nn.AdaptiveAvgPool2d(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.head(self.body(x))).flatten(1)
