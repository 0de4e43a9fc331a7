"""The Classifier contract: preprocessing by hand, frozen parameters, gradients to the input."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from digin_cli.classifiers.base import Classifier


class _Linear(Classifier):
    def __init__(self, interpolation: str = "bicubic", size: int = 24) -> None:
        torch.manual_seed(0)
        net = nn.Sequential(nn.Flatten(), nn.Linear(3 * size * size, 5))
        super().__init__(net, [f"c{i}" for i in range(5)], (size, size), (0.4, 0.5, 0.6), (0.2, 0.25, 0.3), interpolation)

    def _logits_and_features(self, x):
        f = self.model[0](x)
        return self.model[1](f), f


MEAN = torch.tensor([0.4, 0.5, 0.6]).view(1, 3, 1, 1)
STD = torch.tensor([0.2, 0.25, 0.3]).view(1, 3, 1, 1)


@pytest.mark.parametrize("mode", ["bilinear", "bicubic"])
def test_preprocess_matches_hand_computation(images, mode):
    clf = _Linear(mode)
    ref = (F.interpolate(images, size=(24, 24), mode=mode, antialias=True, align_corners=False) - MEAN) / STD
    torch.testing.assert_close(clf.preprocess(images), ref, rtol=0, atol=1e-6)
    # Downsampling 64 -> 24 with antialias differs from plain interpolation: prove antialias is really on.
    plain = (F.interpolate(images, size=(24, 24), mode=mode, align_corners=False) - MEAN) / STD
    assert (clf.preprocess(images) - plain).abs().max() > 1e-3


def test_preprocess_skips_resize_at_input_size(make_images):
    clf = _Linear()
    x = make_images(2, size=24)
    torch.testing.assert_close(clf.preprocess(x), (x - MEAN) / STD, rtol=0, atol=1e-7)


def test_gradients_reach_input_and_parameters_are_frozen(images):
    clf = _Linear()
    x = images.clone().requires_grad_(True)
    clf(x)[:, 2].sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert all(not p.requires_grad for p in clf.parameters())
    assert all(p.grad is None for p in clf.parameters())


def test_stays_in_eval_mode_and_reports_its_contract():
    clf = _Linear()
    clf.train()
    assert not clf.training and not any(m.training for m in clf.modules())
    assert clf.num_classes == 5 and clf.input_size == (24, 24)
    assert clf.enable_grad_checkpointing() is False  # a plain Sequential has no checkpointing switch


def test_forward_features_and_both_agree(images):
    clf = _Linear()
    logits, feats = clf.logits_and_features(images)
    torch.testing.assert_close(logits, clf(images))
    torch.testing.assert_close(feats, clf.features(images))
    torch.testing.assert_close(clf.model[1](feats), logits)


def test_dtype_follows_the_module(images):
    clf = _Linear().to(torch.float64)
    assert clf(images).dtype == torch.float64  # float32 input is cast, not rejected


def test_rejects_bad_shapes_and_modes():
    with pytest.raises(ValueError):
        _Linear("nearest")
    with pytest.raises(ValueError):
        _Linear()(torch.rand(2, 1, 24, 24))
