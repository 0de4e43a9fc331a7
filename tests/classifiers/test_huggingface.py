"""classifier=hf: a tiny random transformers ViT saved with save_pretrained, against the model and its processor."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from digin_cli.api.builders import preset
from digin_cli.classifiers import build_classifier
from digin_cli.classifiers.huggingface import HFClassifier, preprocessing_from_processor
from digin_cli.errors import DiginError

from .conftest import save_tiny_vit

NAMES = ["apple_pie", "baby back ribs", "baklava", "beef carpaccio", "beignets"]


@pytest.fixture(scope="module")
def vit_folder(tmp_path_factory) -> Path:
    return save_tiny_vit(tmp_path_factory.mktemp("tiny_vit"), names=NAMES)


def _cfg(pretrained, **overrides):
    cfg = preset("classifier", "hf")
    cfg.pretrained = str(pretrained)
    return OmegaConf.merge(cfg, overrides)


def test_logits_match_the_model_on_processor_input_and_names_come_from_id2label(vit_folder):
    from PIL import Image
    from transformers import AutoImageProcessor, AutoModelForImageClassification

    clf = build_classifier(_cfg(vit_folder), "cpu")
    assert isinstance(clf, HFClassifier) and clf.class_names == NAMES
    assert clf.input_size == (32, 32) and clf.interpolation == "bicubic"
    model = AutoModelForImageClassification.from_pretrained(vit_folder).eval()
    processor = AutoImageProcessor.from_pretrained(vit_folder)
    rng = np.random.default_rng(0)
    pixels = [rng.integers(0, 256, (32, 32, 3), dtype=np.uint8) for _ in range(3)]
    reference_input = processor(images=[Image.fromarray(p) for p in pixels], return_tensors="pt")["pixel_values"]
    x = torch.stack([torch.from_numpy(p).permute(2, 0, 1) for p in pixels]).float() / 255
    with torch.no_grad():
        out = model(pixel_values=reference_input, output_hidden_states=True)
        torch.testing.assert_close(clf(x), out.logits, rtol=0, atol=1e-5)
        logits, feats = clf.logits_and_features(x)
        torch.testing.assert_close(logits, out.logits, rtol=0, atol=1e-5)
        # ViT's head reads the final layer-normed [CLS] token.
        cls = model.vit.layernorm(out.hidden_states[-1])[:, 0]
        torch.testing.assert_close(feats, cls, rtol=0, atol=1e-5)
    assert out.logits.std() > 0 and clf.num_features == 32
    w, b = clf.head()
    assert w.shape == (5, 32)
    torch.testing.assert_close(feats @ w.T + b, logits, rtol=1e-5, atol=1e-5)
    assert set(clf.state_dict()) == {f"model.{k}" for k in model.state_dict()}


def test_any_input_size_is_resized_differentiably(vit_folder, make_images):
    clf = build_classifier(_cfg(vit_folder), "cpu")
    x = make_images(2, size=64).requires_grad_(True)
    clf(x)[:, 1].sum().backward()
    assert x.grad.abs().sum() > 0 and not any(p.requires_grad for p in clf.parameters())


def test_processor_configs_become_resize_and_normalisation_for_unit_range_inputs():
    from transformers import ConvNextImageProcessor, ViTImageProcessor

    vit = preprocessing_from_processor(ViTImageProcessor(size={"height": 384, "width": 320}, resample=2))
    assert vit["input_size"] == (384, 320) and vit["interpolation"] == "bilinear"
    assert vit["mean"] == pytest.approx([0.5] * 3) and vit["std"] == pytest.approx([0.5] * 3)
    # Pixels rescaled by 1/127.5 instead of 1/255: mean/std in [0,1] units are halved.
    half = preprocessing_from_processor(ViTImageProcessor(rescale_factor=1 / 127.5, image_mean=[0.2] * 3,
                                                          image_std=[0.4] * 3))
    assert half["mean"] == pytest.approx([0.1] * 3) and half["std"] == pytest.approx([0.2] * 3)
    convnext = preprocessing_from_processor(ConvNextImageProcessor(size={"shortest_edge": 288}, resample=3))
    assert convnext["input_size"] == (288, 288) and convnext["interpolation"] == "bicubic"


def test_overrides_replace_the_processor_config(vit_folder):
    clf = build_classifier(_cfg(vit_folder, mean=[0.0] * 3, std=[1.0] * 3, interpolation="bilinear"), "cpu")
    assert clf.mean.flatten().tolist() == [0.0] * 3 and clf.interpolation == "bilinear"
    with pytest.raises(DiginError, match="fails on a probe batch of 64x64 images.*classifier.input_size"):
        build_classifier(_cfg(vit_folder, input_size=64), "cpu")


def test_missing_hub_model_offline_names_id_offline_and_local_folder():
    with pytest.raises(DiginError) as e:
        build_classifier(_cfg("digin-test/no-such-classifier"), "cpu", key="classifier2")
    msg = str(e.value)
    assert "'digin-test/no-such-classifier'" in msg and "HF_HUB_OFFLINE" in msg
    assert "classifier2.pretrained=/local/folder" in msg and "\n" not in msg


def test_folder_that_is_not_a_model(tmp_path):
    with pytest.raises(DiginError, match="from folder .*save_pretrained"):
        build_classifier(_cfg(tmp_path), "cpu")


def test_presets_name_the_authors_hub_models():
    expected = {"food101": "nateraw/food", "cub": "PwNzDust/vit_cub", "flowers": "andriydovgal/mvp_flowers"}
    for name, hub_id in expected.items():
        cfg = preset("classifier", name)
        assert cfg.pretrained == hub_id and cfg._target_.endswith("HFClassifier")


def test_folder_without_processor_config_needs_stated_preprocessing(vit_folder, tmp_path):
    import shutil

    bare = tmp_path / "bare"
    shutil.copytree(vit_folder, bare)
    (bare / "preprocessor_config.json").unlink()
    with pytest.raises(DiginError, match="no usable image processor config.*classifier.input_size / mean / std"):
        build_classifier(_cfg(bare), "cpu")
    clf = build_classifier(_cfg(bare, input_size=32, mean=[0.5] * 3, std=[0.5] * 3, interpolation="bilinear"), "cpu")
    assert clf.input_size == (32, 32) and clf.class_names == NAMES
