"""Random cutouts + Gaussian noise for the classifier loss (DiG-IN's augmentation).

Optimising a classifier objective through the sampler without augmentation finds adversarial high-frequency
patterns; averaging the loss over random crops makes the guidance favour changes that survive re-framing.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


class Cutouts:
    """``num`` random square crops, each pooled to ``size`` and perturbed with N(0, noise_sd²) noise.

    The crop side is ``int(u ** power * (S - size) + size)`` with u ~ U(0,1): power < 1 biases crops towards the
    whole image. With ``num = 0`` the images are returned unchanged (no crop, no noise; the classifier resizes).

    Randomness comes from ``generator`` (the call's, else the one given here, else the global RNG). The run gives
    every item its own generator on the run's device (:func:`digin_cli.tasks.common.run_items`), and crop parameters
    and noise are drawn on that generator's device, so an item's cutouts do not depend on the items before it and no
    noise tensor is drawn on the CPU and copied.
    """

    def __init__(self, num: int = 16, power: float = 0.3, noise_sd: float = 0.005,
                 generator: torch.Generator | None = None):
        self.num, self.power, self.noise_sd = int(num), float(power), float(noise_sd)
        self.generator = generator

    def __call__(self, images: torch.Tensor, size: tuple[int, int], generator: torch.Generator | None = None
                 ) -> torch.Tensor:
        """``images`` (B,3,H,W) in [0,1] -> (B*num, 3, *size) crops in [0,1] plus noise."""
        if self.num <= 0:
            return images
        generator = generator if generator is not None else self.generator
        device = generator.device if generator is not None else images.device
        _, _, h, w = images.shape
        side_max, side_min = min(h, w), min(size)
        crops = []
        # Slicing needs Python ints: one small (num x 3) transfer per call, the price of the authors' exact crops.
        rand = torch.rand(self.num, 3, generator=generator, device=device)
        for u, fy, fx in rand.tolist():
            side = max(1, min(side_max, int(u ** self.power * max(side_max - side_min, 0) + side_min)))
            y = int(fy * (h - side + 1))
            x = int(fx * (w - side + 1))
            crops.append(F.adaptive_avg_pool2d(images[:, :, y : y + side, x : x + side], size))
        out = torch.cat(crops)
        if self.noise_sd > 0:
            noise = torch.randn(out.shape, generator=generator, device=device)
            out = out + self.noise_sd * noise.to(out.device, out.dtype)
        return out
