"""Mask post-processing: erosion, dilation, Gaussian blur, and the latent-size mask.

The op strings are the authors' (``SegmentationArgs.postprocessing``, default
``['erosion_3', 'dilation_20', 'blur_45_30']``): ``erosion_K`` and ``dilation_K`` use a flat K x K structuring element,
``blur_K_SIGMA`` a K x K Gaussian of standard deviation SIGMA. Kernel sizes are in pixels of the mask they act on; the
authors' numbers are for 512 px images (see ``scale`` in :func:`postprocess`).

Erosion / dilation are max-pool based. Even kernels (``dilation_20``) are allowed: the kernel's anchor is at ``K // 2``,
i.e. ``K // 2`` pixels before and ``K - 1 - K // 2`` after, the convention of the morphology library the authors used.
Pixels outside the image never count (geodesic border): the border neither erodes nor dilates the mask.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torchvision.transforms import functional as TF

from digin_cli.errors import DiginError

DEFAULT_OPS = ("erosion_3", "dilation_20", "blur_45_30")
OP_FORMAT = "erosion_SIZE, dilation_SIZE or blur_SIZE_SIGMA (e.g. erosion_3, dilation_20, blur_45_30)"


def _as_4d(mask: torch.Tensor) -> tuple[torch.Tensor, torch.Size]:
    if mask.dim() < 2:
        raise ValueError(f"a mask needs at least 2 dimensions (H, W), got shape {tuple(mask.shape)}")
    shape = mask.shape
    return mask.reshape(-1, 1, shape[-2], shape[-1]), shape


def _check_kernel(k: int) -> int:
    k = int(k)
    if k < 1:
        raise ValueError(f"kernel size must be >= 1, got {k}")
    return k


def dilate(mask: torch.Tensor, k: int) -> torch.Tensor:
    """Grey-value dilation with a flat ``k`` x ``k`` element (max over the window); same shape as ``mask``."""
    k = _check_kernel(k)
    if k == 1:
        return mask.clone()
    x, shape = _as_4d(mask)
    before, after = k // 2, k - 1 - k // 2
    x = F.pad(x, (before, after, before, after), value=float("-inf"))
    return F.max_pool2d(x, kernel_size=k, stride=1).reshape(shape)


def erode(mask: torch.Tensor, k: int) -> torch.Tensor:
    """Grey-value erosion with a flat ``k`` x ``k`` element (min over the window); same shape as ``mask``."""
    return -dilate(-mask, k)


def blur(mask: torch.Tensor, k: int, sigma: float) -> torch.Tensor:
    """Gaussian blur (``torchvision``'s ``gaussian_blur``, reflect padding) with an odd ``k`` x ``k`` kernel.

    A kernel wider than the mask allows for reflect padding (``2 * min(H, W) - 1``) is shrunk to that size.
    """
    k = _check_kernel(k)
    if k % 2 == 0:
        raise ValueError(f"blur kernel size must be odd, got {k}")
    if sigma <= 0:
        raise ValueError(f"blur sigma must be > 0, got {sigma}")
    x, shape = _as_4d(mask)
    limit = 2 * min(x.shape[-2], x.shape[-1]) - 1
    k = min(k, limit)
    if k == 1:
        return mask.clone()
    out = TF.gaussian_blur(x, kernel_size=[k, k], sigma=[float(sigma), float(sigma)])
    return out.reshape(shape)


def parse_op(op: str) -> tuple[str, tuple[float, ...]]:
    """``'blur_45_30'`` -> ``('blur', (45.0, 30.0))``; a malformed string raises :class:`DiginError`."""
    parts = str(op).strip().split("_")
    name, args = parts[0], parts[1:]
    expected = {"erosion": 1, "dilation": 1, "blur": 2}
    try:
        values = tuple(float(a) for a in args)
    except ValueError:
        values = ()
    if name not in expected or len(values) != expected[name] or values[0] < 1 or values[0] != int(values[0]) \
            or (name == "blur" and (int(values[0]) % 2 == 0 or values[1] <= 0)):
        raise DiginError(f"bad segmentation post-processing op '{op}' — use {OP_FORMAT}; blur sizes are odd, "
                         "e.g. segmentation.ops=[erosion_3,dilation_20,blur_45_30]")
    return name, values


def _scaled_kernel(k: float, scale: float, odd: bool) -> int:
    size = max(1, int(k * scale + 0.5))  # round half up
    if odd and size % 2 == 0:
        size += 1
    return size


def postprocess(mask: torch.Tensor, ops: Sequence[str] = DEFAULT_OPS, scale: float = 1.0) -> torch.Tensor:
    """Apply the op strings in order.

    ``scale`` multiplies every kernel size and sigma (sizes rounded half up, at least 1, blur sizes kept odd): the
    segmenters pass ``side / 512`` so the authors' 512 px numbers keep their meaning at other image sizes.
    """
    ops = [ops] if isinstance(ops, str) else list(ops or ())
    parsed = [parse_op(op) for op in ops]  # validate all before doing any work
    out = mask
    for name, values in parsed:
        if name == "erosion":
            out = erode(out, _scaled_kernel(values[0], scale, odd=False))
        elif name == "dilation":
            out = dilate(out, _scaled_kernel(values[0], scale, odd=False))
        else:
            out = blur(out, _scaled_kernel(values[0], scale, odd=True), values[1] * scale)
    return out


def latent_mask(px_mask: torch.Tensor, latent_hw: tuple[int, int] | Sequence[int]) -> torch.Tensor:
    """Resize a pixel mask ``(B, 1, H, W)`` to the latent size ``(B, 1, h, w)``.

    Downsampling averages each latent cell's pixels (area interpolation = adaptive average pooling), so the latent
    mask is the fraction of foreground under each latent pixel; upsampling (unusual) is bilinear.
    """
    h, w = int(latent_hw[0]), int(latent_hw[1])
    x, shape = _as_4d(px_mask)
    if (h, w) == tuple(x.shape[-2:]):
        out = x.clone()
    elif h <= x.shape[-2] and w <= x.shape[-1]:
        out = F.interpolate(x, size=(h, w), mode="area")
    else:
        out = F.interpolate(x, size=(h, w), mode="bilinear", align_corners=False)
    return out.reshape(*shape[:-2], h, w)


__all__ = ["DEFAULT_OPS", "erode", "dilate", "blur", "parse_op", "postprocess", "latent_mask"]


def overlay(image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The image dimmed outside the mask and tinted red inside it (mask_overlay.png of every masked item)."""
    red = torch.tensor([1.0, 0.2, 0.2], device=image.device).view(1, 3, 1, 1)
    return (image * (0.35 + 0.65 * mask) * (1 - 0.35 * mask) + 0.35 * mask * red).clamp(0, 1)
