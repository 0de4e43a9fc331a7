"""Foreground masks for visual counterfactuals: attention map -> (points -> SAM) -> post-processing -> masks.

``build_segmenter(cfg.segmentation, device)`` returns a :class:`~digin_cli.segmentation.base.Segmenter`; its
``segment(image, attention_map, latent_hw)`` gives ``(S_PX, S_VAE)``, 1 = foreground. Configs: ``conf/segmentation/``
(``none``, ``attention``, ``sam_hq``, ``sam``, ``tiny_sam``).
"""

from __future__ import annotations

import torch

from digin_cli.errors import DiginError
from digin_cli.segmentation.base import AttentionSegmenter, NoSegmenter, Segmenter


def _digin_cause(err: BaseException) -> DiginError | None:
    seen = set()
    while err is not None and id(err) not in seen:
        if isinstance(err, DiginError):
            return err
        seen.add(id(err))
        err = err.__cause__ or err.__context__
    return None


def build_segmenter(cfg, device: str | torch.device | None = None) -> Segmenter:
    """Instantiate ``cfg`` (a ``segmentation`` config node) on ``device``.

    ``cfg`` is None, has ``name: none`` or has no ``_target_`` -> :class:`NoSegmenter` (no foreground; see there).
    A :class:`DiginError` raised while constructing (e.g. missing weights) is re-raised as is, without Hydra's wrapper.
    """
    name = cfg.get("name") if cfg is not None else None
    if cfg is None or name == "none" or not cfg.get("_target_"):
        return NoSegmenter(name=name or "none", device=device)

    from hydra.errors import InstantiationException
    from hydra.utils import instantiate

    overrides = {} if device is None else {"device": str(device)}
    try:
        return instantiate(cfg, **overrides)
    except InstantiationException as err:
        cause = _digin_cause(err.__cause__)
        if cause is not None:
            raise cause from None
        raise


__all__ = ["build_segmenter", "Segmenter", "AttentionSegmenter", "NoSegmenter"]
