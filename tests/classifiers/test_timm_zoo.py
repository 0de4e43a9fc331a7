"""TimmClassifier against the wrapped timm model computed by hand."""

from __future__ import annotations

import time

import pytest
import torch
import torch.nn.functional as F

from digin_cli.classifiers.timm_zoo import TimmClassifier
from digin_cli.errors import DiginError


def _by_hand(clf: TimmClassifier, x: torch.Tensor, mode: str) -> torch.Tensor:
    mean = torch.tensor([0.5, 0.5, 0.5]).view(1, 3, 1, 1)  # the test_* models' pretrained config
    return (F.interpolate(x, size=(160, 160), mode=mode, antialias=True, align_corners=False) - mean) / mean


@pytest.mark.parametrize("name,mode", [("test_resnet", "bilinear"), ("test_vit", "bicubic")])
def test_matches_timm_model_on_resized_normalised_input(images, name, mode):
    torch.manual_seed(0)
    clf = TimmClassifier(name, pretrained=False)
    assert clf.input_size == (160, 160) and clf.interpolation == mode and clf.num_classes == 1000
    assert clf.class_names[277] == "red fox"
    xn = _by_hand(clf, images, mode)
    with torch.no_grad():
        ref_logits = clf.model(xn)
        ref_feats = clf.model.forward_head(clf.model.forward_features(xn), pre_logits=True)
        logits, feats = clf.logits_and_features(images)
        torch.testing.assert_close(clf(images), ref_logits, rtol=0, atol=1e-6)
        torch.testing.assert_close(clf.features(images), ref_feats, rtol=0, atol=1e-6)
        torch.testing.assert_close(logits, ref_logits, rtol=0, atol=1e-6)
        torch.testing.assert_close(feats, ref_feats, rtol=0, atol=1e-6)
        # The features really are the input of the final linear layer.
        torch.testing.assert_close(clf.model.get_classifier()(feats), logits, rtol=1e-5, atol=1e-5)
    assert ref_logits.std() > 0


def test_frozen_with_gradients_to_input_and_checkpointing(images):
    torch.manual_seed(0)
    plain = TimmClassifier("test_resnet", pretrained=False)
    torch.manual_seed(0)
    ckpt = TimmClassifier("test_resnet", pretrained=False, grad_checkpointing=True)
    assert ckpt.model.grad_checkpointing and not plain.model.grad_checkpointing
    grads = []
    for clf in (plain, ckpt):
        assert not any(p.requires_grad for p in clf.parameters()) and not clf.training
        x = images.clone().requires_grad_(True)
        clf(x).log_softmax(-1)[:, 1].sum().backward()
        grads.append(x.grad)
    assert grads[0].abs().sum() > 0
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-4, atol=1e-6)


def test_preprocessing_overrides():
    clf = TimmClassifier("test_resnet", pretrained=False, input_size=64, interpolation="bicubic", mean=[0, 0, 0])
    assert clf.input_size == (64, 64) and clf.interpolation == "bicubic"
    assert clf.mean.flatten().tolist() == [0, 0, 0] and clf.std.flatten().tolist() == [0.5, 0.5, 0.5]


def test_unknown_model_and_tag_suggest_names():
    with pytest.raises(DiginError, match="convnext_base.fb_in1k"):
        TimmClassifier("convnext_bse.fb_in1k", pretrained=False)
    with pytest.raises(DiginError, match=r"no pretrained tag 'a9_in1k' \(did you mean: 'resnet50\."):
        TimmClassifier("resnet50.a9_in1k", pretrained=False)


def test_offline_without_cache_is_a_one_line_error(tmp_path, monkeypatch):
    import huggingface_hub.constants as hf_constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    start = time.monotonic()
    with pytest.raises(DiginError) as e:
        TimmClassifier("resnet18.a1_in1k", pretrained=True)
    assert time.monotonic() - start < 10
    msg = str(e.value)
    assert "'resnet18.a1_in1k'" in msg and "HF_HUB_OFFLINE" in msg and "classifier.checkpoint=" in msg
    assert "\n" not in msg
    # The shared hub-loading line (digin_cli.errors.load_error), without the hub's traceback chained to it.
    assert msg == ("cannot load timm weights 'resnet18.a1_in1k': not in the local Hugging Face cache and HF_HUB_OFFLINE "
                   "is set — download them once with network access (HF_HUB_OFFLINE=0), or pass "
                   "classifier.checkpoint=/path/to/weights")
    assert e.value.__cause__ is None and e.value.__suppress_context__


def test_a_local_dir_model_that_does_not_load_names_the_folder_and_the_loaders_reason(tmp_path):
    with pytest.raises(DiginError) as e:
        TimmClassifier(f"local-dir:{tmp_path}", pretrained=True)
    assert str(e.value).startswith(f"cannot load a timm model from folder '{tmp_path}' (FileNotFoundError: ")
    assert str(e.value).endswith("— point classifier.name=local-dir:<folder> at a folder with config.json and the "
                                 "weights, or pass classifier.checkpoint=/path/to/weights")
    assert "\n" not in str(e.value)


def test_checkpoint_of_another_dataset_with_its_own_names(tmp_path, images):
    names = tmp_path / "birds.json"
    names.write_text('{"0": "albatross", "1": "auklet", "2": "blackbird"}')
    torch.manual_seed(1)
    src = TimmClassifier("test_resnet", pretrained=False, num_classes=3)
    torch.save(src.model.state_dict(), tmp_path / "birds.pt")
    clf = TimmClassifier("test_resnet", pretrained=False, checkpoint=str(tmp_path / "birds.pt"), num_classes=3,
                         class_names=str(names))
    assert clf.class_names == ["albatross", "auklet", "blackbird"]
    torch.testing.assert_close(clf(images), src(images), rtol=0, atol=0)
    with pytest.raises(DiginError, match="2 names but timm model 'test_resnet' has 3 outputs"):
        TimmClassifier("test_resnet", pretrained=False, num_classes=3, class_names=["a", "b"])
