"""Small seeded test images in [0, 1]."""

import torch


def images(n, seed, shift=0.0):
    """n 48 px images: a random flat colour (+ ``shift``) with mild texture."""
    g = torch.Generator().manual_seed(seed)
    base = torch.rand(n, 3, 1, 1, generator=g) * 0.6 + 0.2 + shift
    return (base + 0.1 * torch.rand(n, 3, 48, 48, generator=g)).clamp(0, 1)
