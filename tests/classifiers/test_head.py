"""The linear-head contract: ``logits == features @ W.T + b`` for every zoo family, a clear error otherwise."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from digin_cli.classifiers.base import Classifier
from digin_cli.classifiers.openclip_zeroshot import OpenClipZeroShot
from digin_cli.classifiers.timm_zoo import TimmClassifier
from digin_cli.classifiers.tiny import TinyClassifier
from digin_cli.errors import DiginError


def _check_head(clf: Classifier, images: torch.Tensor) -> None:
    with torch.no_grad():
        logits, feats = clf.logits_and_features(images)
        w, b = clf.head()
    assert w.shape == (clf.num_classes, clf.num_features) and b.shape == (clf.num_classes,)
    assert feats.shape == (len(images), clf.num_features)
    torch.testing.assert_close(feats @ w.T + b, logits, rtol=1e-5, atol=1e-5)
    assert logits.std() > 0


# ResNet (resnet50, robust_resnet50, seresnet152d), ConvNeXt (convnext_b) and ViT (vit_*, robust_vit_s; eva02 has
# the same get_classifier() = nn.Linear head) families of the timm zoo.
@pytest.mark.parametrize("name", ["test_resnet", "test_convnext", "test_vit"])
def test_timm_head_reproduces_logits(images, name):
    torch.manual_seed(0)
    _check_head(TimmClassifier(name, pretrained=False), images)


def test_tiny_head_reproduces_logits(images):
    clf = TinyClassifier(0)
    _check_head(clf, images)
    assert clf.num_features == 64


def test_openclip_zero_shot_head_is_scaled_class_weights(tiny_clip_name, tmp_path, images):
    torch.manual_seed(0)
    clf = OpenClipZeroShot(tiny_clip_name, pretrained=None, templates="simple", cache_dir=str(tmp_path))
    _check_head(clf, images)
    assert clf.num_features == 16 and clf.head()[1].abs().max() == 0


def test_num_features_default_runs_the_backbone_once(images):
    class Plain(Classifier):
        def __init__(self):
            super().__init__(nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 7)), ["a", "b"], 8,
                             (0.5,) * 3, (0.5,) * 3)

        def _logits_and_features(self, x):
            f = self.model(x)
            return f[:, :2], f

    clf = Plain()
    assert clf.num_features == 7
    with pytest.raises(DiginError, match="no linear head over its features") as e:
        clf.head()
    assert "\n" not in str(e.value)


def test_non_linear_timm_head_is_a_one_line_error():
    torch.manual_seed(0)
    clf = TimmClassifier("test_resnet", pretrained=False)
    clf.model.fc = nn.Sequential(nn.Linear(clf.num_features, 10), nn.ReLU(), nn.Linear(10, 1000))
    with pytest.raises(DiginError, match="Sequential, not a linear layer") as e:
        clf.head()
    assert "test_resnet" in str(e.value) and "\n" not in str(e.value)
