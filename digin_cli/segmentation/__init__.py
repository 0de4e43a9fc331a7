"""Foreground masks for visual counterfactuals: attention map -> (points -> SAM) -> post-processing -> masks.

``build_segmenter(cfg.segmentation, device)`` returns a :class:`~digin_cli.segmentation.base.Segmenter`; its
``segment(image, attention_map, latent_hw)`` gives ``(S_PX, S_VAE)``, 1 = foreground. Configs: ``conf/segmentation/``
(``none``, ``attention``, ``sam_hq``, ``sam``, ``tiny_sam``).

Text-prompted segmentation (``grounded_sam``, ``tiny_grounded_sam``: :class:`~digin_cli.segmentation.grounding.
GroundedSam`) is built the same way; it has ``segment_text(images, text)`` instead of ``segment`` and
``text_prompted = True``.
"""

from __future__ import annotations

import torch

from digin_cli.errors import instantiate
from digin_cli.segmentation.base import AttentionSegmenter, NoSegmenter, Segmenter


def build_segmenter(cfg, device: str | torch.device | None = None) -> Segmenter:
    """Instantiate ``cfg`` (a ``segmentation`` config node) on ``device``.

    ``cfg`` is None, has ``name: none`` or has no ``_target_`` -> :class:`NoSegmenter` (no foreground; see there).
    A :class:`DiginError` raised while constructing (e.g. missing weights) is re-raised as is, without Hydra's wrapper.
    """
    name = cfg.get("name") if cfg is not None else None
    if cfg is None or name == "none" or not cfg.get("_target_"):
        return NoSegmenter(name=name or "none", device=device)

    overrides = {} if device is None else {"device": str(device)}
    return instantiate(cfg, **overrides)


__all__ = ["build_segmenter", "Segmenter", "AttentionSegmenter", "NoSegmenter"]
