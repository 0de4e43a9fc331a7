"""The segmenter contract and the two segmenters that need no weights.

``Segmenter.segment(image, attention_map, latent_hw=None) -> (S_PX, S_VAE)``

* ``image``: ``(B, 3, H, W)`` (or ``(3, H, W)``) in ``[0, 1]``, the original image.
* ``attention_map``: the max-normalised cross-attention map ``A`` of the start-class words, values in ``[0, 1]``,
  shape ``(h, w)``, ``(B, h, w)`` or ``(B, 1, h, w)``, at any resolution (it is bicubic-resized to ``H x W`` and
  clamped, as in the authors' code). It is *not* squashed yet: the segmenter applies
  :func:`~digin_cli.segmentation.points.squash`.
* ``latent_hw``: the latent size; default ``(H // 8, W // 8)`` (Stable Diffusion's VAE factor).
* Returns ``S_PX`` ``(B, 1, H, W)`` and ``S_VAE`` ``(B, 1, h_lat, w_lat)``, float32 in ``[0, 1]`` on the image's device,
  **1 = foreground**. ``S_VAE`` is ``S_PX`` area-pooled to the latent size. The VCE background losses use ``1 - S``.

Pipeline (official code, section 1.7 of the method facts): squash ``sqrt_0.3`` -> foreground pixels (this class's
``foreground``) -> post-processing ``erosion_3, dilation_20, blur_45_30`` -> latent mask.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from digin_cli.segmentation.points import squash
from digin_cli.segmentation.postprocess import DEFAULT_OPS, latent_mask, parse_op, postprocess

VAE_FACTOR = 8


def _image_4d(image: torch.Tensor) -> torch.Tensor:
    if image.dim() == 3:
        image = image[None]
    if image.dim() != 4 or image.shape[1] != 3:
        raise ValueError(f"image must be (B, 3, H, W) or (3, H, W), got shape {tuple(image.shape)}")
    return image


def _maps_4d(attention_map: torch.Tensor, batch: int) -> torch.Tensor:
    A = torch.as_tensor(attention_map)
    if A.dim() == 2:
        A = A[None, None]
    elif A.dim() == 3:
        A = A[:, None]
    if A.dim() != 4 or A.shape[1] != 1:
        raise ValueError(f"attention_map must be (h, w), (B, h, w) or (B, 1, h, w), got shape {tuple(A.shape)}")
    if A.shape[0] == 1 and batch > 1:
        A = A.expand(batch, -1, -1, -1)
    if A.shape[0] != batch:
        raise ValueError(f"attention_map holds {A.shape[0]} maps for {batch} images")
    return A


class Segmenter:
    """Base class: turns (image, attention map) into pixel and latent foreground masks.

    Subclasses implement :meth:`foreground`; everything else (resizing, squash, post-processing, latent mask) is here.

    Args:
        threshold: foreground threshold on the *squashed* map (the authors' ``sam_foreground_threshold=0.35``).
        squash_threshold: ``t`` of the ``sqrt_t`` squash (authors: 0.3).
        ops: post-processing op strings, applied in order (see :mod:`digin_cli.segmentation.postprocess`).
        ops_reference_size: the image side the op kernel sizes are meant for (the authors': 512). Kernels and sigmas
            are scaled by ``max(H, W) / ops_reference_size``; ``None`` applies them literally in pixels.
        name: the config name (``segmentation.name``), kept for logs.
        device: where the model (if any) runs; masks are returned on the image's device.
    """

    #: False only for :class:`NoSegmenter`: consumers can skip mask-dependent work (e.g. latent blending).
    active = True

    def __init__(self, threshold: float = 0.35, squash_threshold: float = 0.3, ops: Sequence[str] = DEFAULT_OPS,
                 ops_reference_size: int | None = 512, name: str | None = None,
                 device: str | torch.device | None = None):
        self.threshold = float(threshold)
        self.squash_threshold = float(squash_threshold)
        self.ops = tuple(str(op) for op in ([ops] if isinstance(ops, str) else (ops or ())))
        for op in self.ops:  # fail at construction (a config error), not in the middle of a run
            parse_op(op)
        self.ops_reference_size = int(ops_reference_size) if ops_reference_size else None
        self.name = name or type(self).__name__
        self.device = torch.device(device) if device is not None else torch.device("cpu")

    # -- to implement -------------------------------------------------------------------------------------------
    def foreground(self, image: torch.Tensor, score: torch.Tensor) -> torch.Tensor:
        """One image ``(3, H, W)`` in [0, 1] and its squashed map ``(H, W)`` -> raw foreground mask ``(H, W)``."""
        raise NotImplementedError

    # -- shared pipeline ----------------------------------------------------------------------------------------
    def scores(self, attention_map: torch.Tensor, size: tuple[int, int], batch: int = 1) -> torch.Tensor:
        """Resize (bicubic, clamped to [0, 1]) and squash the attention map(s): ``(B, 1, H, W)`` float32."""
        A = _maps_4d(attention_map, batch).detach().float()
        if tuple(A.shape[-2:]) != tuple(size):
            A = F.interpolate(A, size=size, mode="bicubic", align_corners=False)
        return squash(A.clamp(0.0, 1.0), self.squash_threshold)

    def ops_scale(self, size: tuple[int, int]) -> float:
        return max(size) / self.ops_reference_size if self.ops_reference_size else 1.0

    @torch.no_grad()
    def segment(self, image: torch.Tensor, attention_map: torch.Tensor,
                latent_hw: tuple[int, int] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        image = _image_4d(image)
        batch, _, height, width = image.shape
        latent_hw = tuple(latent_hw) if latent_hw is not None else (height // VAE_FACTOR, width // VAE_FACTOR)
        score = self.scores(attention_map.to(image.device), (height, width), batch)
        raw = torch.stack([self.foreground(image[i].float(), score[i, 0]).to(image.device, torch.float32)
                           for i in range(batch)])[:, None]
        s_px = postprocess(raw, self.ops, self.ops_scale((height, width))).clamp(0.0, 1.0)
        return s_px, latent_mask(s_px, latent_hw).clamp(0.0, 1.0)

    def __call__(self, *args, **kwargs) -> tuple[torch.Tensor, torch.Tensor]:
        return self.segment(*args, **kwargs)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, threshold={self.threshold}, ops={list(self.ops)})"


class AttentionSegmenter(Segmenter):
    """``segmentation=attention``: the foreground is the squashed attention map itself above ``threshold``.

    No weights are needed. ``binarize=False`` keeps the soft squashed map instead (what the authors' code uses when
    SAM is switched off).
    """

    def __init__(self, threshold: float = 0.35, binarize: bool = True, **kwargs):
        super().__init__(threshold=threshold, **kwargs)
        self.binarize = bool(binarize)

    def foreground(self, image: torch.Tensor, score: torch.Tensor) -> torch.Tensor:
        return (score > self.threshold).float() if self.binarize else score.float()


class NoSegmenter(Segmenter):
    """``segmentation=none``: no foreground anywhere, ``S_PX = S_VAE = 0``.

    Meaning for a visual counterfactual: everything is background, so the background-preservation distances
    (``mean((1 - S) * diff^2)``) run over the whole image, i.e. the plain image / latent distance to the original.
    ``active`` is False so a task can tell this apart from an empty SAM mask and skip mask-only machinery (a latent
    blend that keeps the "background" of the original trajectory would otherwise freeze the whole image).
    """

    active = False

    def __init__(self, name: str | None = "none", device: str | torch.device | None = None, **kwargs):
        super().__init__(ops=(), name=name, device=device, **kwargs)

    def foreground(self, image: torch.Tensor, score: torch.Tensor) -> torch.Tensor:
        return torch.zeros_like(score, dtype=torch.float32)

    @torch.no_grad()
    def segment(self, image: torch.Tensor, attention_map: torch.Tensor | None = None,
                latent_hw: tuple[int, int] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        image = _image_4d(image)
        batch, _, height, width = image.shape
        latent_hw = tuple(latent_hw) if latent_hw is not None else (height // VAE_FACTOR, width // VAE_FACTOR)
        s_px = torch.zeros(batch, 1, height, width, device=image.device)
        return s_px, torch.zeros(batch, 1, *latent_hw, device=image.device)


__all__ = ["Segmenter", "AttentionSegmenter", "NoSegmenter", "VAE_FACTOR"]
