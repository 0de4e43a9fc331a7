"""Classifiers with a known optimum, for tests that must show an optimisation finds it."""

import torch
from torch import nn


class Redness(nn.Module):
    """Two classes, ``red`` and ``blue``: logit_red = scale · (mean R − mean B − offset), logit_blue = 0.

    p(red) rises exactly as the image gets redder on average, whatever the generator draws; its optimum is known
    (an all-red image) and is independent of z, so an expectation over z can be optimised towards it.
    """

    def __init__(self, scale: float = 20.0, offset: float = 0.0) -> None:
        super().__init__()
        self.scale, self.offset = scale, offset

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        means = x.mean(dim=(2, 3))
        red = self.scale * (means[:, 0] - means[:, 2] - self.offset)
        return torch.stack([red, torch.zeros_like(red)], dim=1)


def redness(scale: float = 20.0, offset: float = 0.0) -> Redness:
    return Redness(scale, offset)
