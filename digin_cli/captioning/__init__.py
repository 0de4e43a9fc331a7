"""Captions for visual counterfactuals.

A counterfactual is generated from a caption of the start image, and the caption must contain the start class's
words: prompt-to-prompt swaps exactly those words for the target class. Following the official code, every caption
therefore starts with a template filled with the start class, ``"an image of a {class}"``, and a captioning model
(if any) only adds the rest of the description.

- ``captioner=none`` (default): :class:`TemplateCaptioner`, the filled template and nothing else.
- ``captioner=hf``: :class:`HFCaptioner`, any transformers image-to-text model (BLIP, BLIP-2, GIT,
  VisionEncoderDecoder) loaded through ``AutoModelForImageTextToText``. Where the model takes a text prompt it is
  prompted with the filled template so that it *continues* it; whatever it returns is forced to start with the
  template (:func:`force_prefix`) and cut to fit SD's 77-token window (:func:`fit_clip_tokens`). Captions are cached
  on disk per model (``<cache_dir>/captions/<model-slug>.json``), so a second run or another sweep job never
  recomputes one, and the model is loaded only on the first cache miss.

``build_captioner(cfg.captioner, cache_dir, device)`` builds either from its config node.
"""

from __future__ import annotations

import os
from typing import Any

import torch

from digin_cli.captioning.captioners import Captioner, HFCaptioner, TemplateCaptioner
from digin_cli.captioning.text import (DEFAULT_MAX_TOKENS, DEFAULT_TEMPLATE, fill_template, fit_clip_tokens,
                                       force_prefix, image_hash, join_continuation, model_slug)
from digin_cli.errors import instantiate

__all__ = ["Captioner", "HFCaptioner", "TemplateCaptioner", "build_captioner", "fill_template", "fit_clip_tokens",
           "force_prefix", "image_hash", "join_continuation", "model_slug", "DEFAULT_MAX_TOKENS",
           "DEFAULT_TEMPLATE"]


def build_captioner(cfg, cache_dir: str | os.PathLike | None = None,
                    device: str | torch.device | None = None) -> Captioner:
    """Build the captioner a ``conf/captioner`` node describes.

    ``cfg`` None, ``name: none`` or no ``_target_`` -> :class:`TemplateCaptioner` (with ``cfg.template`` if set).
    Otherwise ``hydra.utils.instantiate`` with ``cache_dir`` / ``device`` passed in; a DiginError raised while
    constructing is re-raised as is, without Hydra's wrapper.
    """
    get = (lambda k, d=None: cfg.get(k, d)) if cfg is not None else (lambda k, d=None: d)
    if cfg is None or get("name") == "none" or not get("_target_"):
        return TemplateCaptioner(template=get("template") or DEFAULT_TEMPLATE, name=get("name") or "none")

    overrides: dict[str, Any] = {}
    if cache_dir is not None:
        overrides["cache_dir"] = str(cache_dir)
    if device is not None:
        overrides["device"] = str(device)
    captioner = instantiate(cfg, _convert_="all", **overrides)
    if not isinstance(captioner, Captioner):
        raise TypeError(f"{get('_target_')} built {type(captioner).__name__}, not a digin Captioner")
    return captioner

