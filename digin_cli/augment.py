"""Random cutouts + Gaussian noise for the classifier loss (DiG-IN's augmentation).

Optimising a classifier objective through the sampler without augmentation finds adversarial high-frequency
patterns; averaging the loss over random crops makes the guidance favour changes that survive re-framing.

The randomness is drawn apart from its use: :meth:`Cutouts.draw` fixes every view of an image (crop box and noise)
once, and :meth:`Cutouts.apply` renders any slice of those views. The optimisation loop draws once per image and
then runs the classifier a chunk of views at a time, so which crop a view sees never depends on the chunk size.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass
class CutoutDraw:
    """The random part of ``num`` views of a batch of ``batch`` images: crop boxes and per-view noise."""

    boxes: list[tuple[int, int, int]]
    """(top, left, side) of each view's square crop."""
    noise: torch.Tensor | None
    """(num, batch, 3, *size) noise already scaled by ``noise_sd``, or None without noise."""
    size: tuple[int, int]

    @property
    def num(self) -> int:
        return len(self.boxes)


class Cutouts:
    """``num`` random square crops, each pooled to ``size`` and perturbed with N(0, noise_sd²) noise.

    The crop side is ``int(u ** power * (S - size) + size)`` with u ~ U(0,1): power < 1 biases crops towards the
    whole image. With ``num = 0`` the images are only resized, which is the evaluation path. ``generator`` (here or
    per call) makes the draws reproducible; without one the global RNG is used.
    """

    def __init__(self, num: int = 16, power: float = 0.3, noise_sd: float = 0.005,
                 generator: torch.Generator | None = None):
        self.num, self.power, self.noise_sd = int(num), float(power), float(noise_sd)
        self.generator = generator

    def draw(self, image_hw: tuple[int, int], batch: int, size: tuple[int, int],
             generator: torch.Generator | None = None) -> CutoutDraw:
        """Fix the crop boxes and the noise of all ``num`` views of ``batch`` images of side ``image_hw``."""
        generator = generator if generator is not None else self.generator
        device = generator.device if generator is not None else torch.device("cpu")
        h, w = image_hw
        side_max, side_min = min(h, w), min(size)
        boxes = []
        for u, fy, fx in torch.rand(self.num, 3, generator=generator, device=device).tolist():
            side = max(1, min(side_max, int(u ** self.power * max(side_max - side_min, 0) + side_min)))
            boxes.append((int(fy * (h - side + 1)), int(fx * (w - side + 1)), side))
        noise = None
        if self.noise_sd > 0:
            noise = torch.randn((self.num * batch, 3, *size), generator=generator, device=device)
            noise = (self.noise_sd * noise).view(self.num, batch, 3, *size)
        return CutoutDraw(boxes, noise, tuple(size))

    def apply(self, images: torch.Tensor, draw: CutoutDraw, views: slice = slice(None)) -> torch.Tensor:
        """Views ``views`` of ``draw`` rendered from ``images`` (B,3,H,W): (n·B, 3, *size), view-major."""
        crops = [F.adaptive_avg_pool2d(images[:, :, y : y + side, x : x + side], draw.size)
                 for y, x, side in draw.boxes[views]]
        out = torch.cat(crops)
        if draw.noise is not None:
            out = out + draw.noise[views].flatten(0, 1).to(out.device, out.dtype)
        return out

    def __call__(self, images: torch.Tensor, size: tuple[int, int], generator: torch.Generator | None = None
                 ) -> torch.Tensor:
        """``images`` (B,3,H,W) in [0,1] -> (num·B, 3, *size) crops in [0,1] plus noise."""
        if self.num <= 0:
            return images
        return self.apply(images, self.draw(tuple(images.shape[-2:]), images.shape[0], size, generator))
