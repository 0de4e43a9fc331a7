"""Shared fixtures for the classifier tests: offline, single-threaded, tiny random models only."""

from __future__ import annotations

import json
import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach for the hub, even if the lead's conftest is absent

import pytest
import torch
import torch.nn.functional as F

torch.set_num_threads(1)

TINY_CLIP = "digin-test-tiny-clip"
CLASSIFIER_CONF = Path(__file__).resolve().parents[2] / "conf" / "classifier"


@pytest.fixture
def classifier_conf() -> Path:
    return CLASSIFIER_CONF


@pytest.fixture(scope="session")
def tiny_clip_name(tmp_path_factory) -> str:
    """Register a tiny random open_clip architecture (ViT 32 px, 1 layer) and return its name."""
    import open_clip

    path = tmp_path_factory.mktemp("openclip_cfg") / f"{TINY_CLIP}.json"
    cfg = {
        "embed_dim": 16,
        # head_width 16: open_clip's default (64) would give a 32-wide tower zero heads.
        "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "head_width": 16, "patch_size": 8},
        "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
    }
    path.write_text(json.dumps(cfg))
    open_clip.add_model_config(path)
    return TINY_CLIP


def smooth_images(n: int, size: int = 64, seed: int = 0) -> torch.Tensor:
    """Random but image-like (smooth) [0,1] batches; i.i.d. pixel noise all looks alike to a pooled CNN."""
    g = torch.Generator().manual_seed(seed)
    low = torch.rand(n, 3, 4, 4, generator=g)
    return F.interpolate(low, size=size, mode="bilinear", align_corners=False).clamp(0, 1)


@pytest.fixture
def make_images():
    return smooth_images


@pytest.fixture
def images() -> torch.Tensor:
    return smooth_images(4)


def save_tiny_vit(folder: Path, names: list[str], image_size: int = 32) -> Path:
    """A random ViTForImageClassification with ``names`` as id2label, plus its image processor, as a hub folder."""
    from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessor

    torch.manual_seed(0)
    config = ViTConfig(image_size=image_size, patch_size=8, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                       intermediate_size=64, id2label=dict(enumerate(names)),
                       label2id={n: i for i, n in enumerate(names)})
    ViTForImageClassification(config).save_pretrained(folder)
    ViTImageProcessor(size={"height": image_size, "width": image_size}, image_mean=[0.48, 0.45, 0.40],
                      image_std=[0.22, 0.23, 0.25], resample=3).save_pretrained(folder)
    return folder
