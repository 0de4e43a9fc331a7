"""Zero-shot CLIP on a tiny random open_clip model: exact logits and a build-once disk cache."""

from __future__ import annotations

import time

import pytest
import torch
import torch.nn.functional as F

from digin_cli.classifiers.openclip_zeroshot import OpenClipZeroShot
from digin_cli.errors import DiginError


def _build(name: str, cache_dir, seed: int = 0) -> OpenClipZeroShot:
    torch.manual_seed(seed)  # open_clip initialises random towers from the global stream
    return OpenClipZeroShot(name, pretrained=None, templates="simple", cache_dir=str(cache_dir))


def test_logits_equal_a_direct_computation_and_cache_is_reused(tiny_clip_name, tmp_path, images, monkeypatch):
    import open_clip
    from open_clip.zero_shot_metadata import IMAGENET_CLASSNAMES, SIMPLE_IMAGENET_TEMPLATES

    clf = _build(tiny_clip_name, tmp_path)
    assert clf.input_size == (32, 32) and clf.interpolation == "bicubic" and clf.num_classes == 1000
    assert not list(tmp_path.glob("*.safetensors"))  # nothing is built before it is needed
    with torch.no_grad():
        logits, feats = clf.logits_and_features(images)

    written = list(tmp_path.glob("*.safetensors"))
    assert len(written) == 1 and tiny_clip_name in written[0].name and "simple" in written[0].name
    assert not list(tmp_path.glob("*.tmp"))

    # Reference: CLIP's own preprocessing constants, embeddings and prompt-averaged class weights.
    model, tok = clf.model, open_clip.get_tokenizer(tiny_clip_name)
    mean = torch.tensor(model.visual.preprocess_cfg["mean"]).view(1, 3, 1, 1)
    std = torch.tensor(model.visual.preprocess_cfg["std"]).view(1, 3, 1, 1)
    xn = (F.interpolate(images, size=(32, 32), mode="bicubic", antialias=True, align_corners=False) - mean) / std
    with torch.no_grad():
        emb = F.normalize(model.encode_image(xn), dim=-1)
        texts = [t(c) for c in IMAGENET_CLASSNAMES[:3] for t in SIMPLE_IMAGENET_TEMPLATES]
        w = F.normalize(model.encode_text(tok(texts)), dim=-1).view(3, len(SIMPLE_IMAGENET_TEMPLATES), -1).mean(1)
        w = F.normalize(w, dim=-1)
        ref = model.logit_scale.exp() * emb @ w.T
    torch.testing.assert_close(feats, emb, rtol=0, atol=1e-6)
    torch.testing.assert_close(logits[:, :3], ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(clf(images), logits)
    assert feats.norm(dim=-1).sub(1).abs().max() < 1e-5

    def no_rebuild(*args, **kwargs):
        raise AssertionError("zero-shot weights were rebuilt although cached")

    monkeypatch.setattr(open_clip, "build_zero_shot_classifier", no_rebuild)
    again = _build(tiny_clip_name, tmp_path)
    with torch.no_grad():
        torch.testing.assert_close(again(images), logits, rtol=0, atol=1e-6)

    x = images.clone().requires_grad_(True)
    again(x)[:, 5].sum().backward()
    assert x.grad.abs().sum() > 0 and not any(p.requires_grad for p in again.parameters())


def test_differently_initialised_towers_do_not_share_a_cache(tiny_clip_name, tmp_path):
    a, b = _build(tiny_clip_name, tmp_path, seed=0), _build(tiny_clip_name, tmp_path, seed=1)
    assert a.cache_path != b.cache_path


def test_offline_weights_and_bad_names_are_one_line_errors(tmp_path, monkeypatch):
    import huggingface_hub.constants as hf_constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    start = time.monotonic()
    with pytest.raises(DiginError) as e:
        OpenClipZeroShot("ViT-B-16", "laion2b_s34b_b88k", cache_dir=str(tmp_path))
    assert "'ViT-B-16'" in str(e.value) and "laion2b_s34b_b88k" in str(e.value) and "HF_HUB_OFFLINE" in str(e.value)
    assert time.monotonic() - start < 10  # open_clip fetches weights before building the towers
    # open_clip wraps the hub's error in a RuntimeError; the shared hub-loading line still comes out, unchained.
    assert str(e.value) == ("cannot load open_clip 'ViT-B-16' weights 'laion2b_s34b_b88k': not in the local Hugging "
                            "Face cache and HF_HUB_OFFLINE is set — download them once with network access "
                            "(HF_HUB_OFFLINE=0), or pass classifier.pretrained=/path/to/weights")
    assert e.value.__cause__ is None and e.value.__suppress_context__


def test_unknown_model_tag_and_templates():
    with pytest.raises(DiginError, match="ViT-B-16"):
        OpenClipZeroShot("ViT-B-61", "laion2b_s34b_b88k")
    with pytest.raises(DiginError, match="laion2b_s34b_b88k"):
        OpenClipZeroShot("ViT-B-16", "laion2b_s34b_b88")
    with pytest.raises(DiginError, match="templates=openai or simple"):
        OpenClipZeroShot("ViT-B-16", templates="fancy")
