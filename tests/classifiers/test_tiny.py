"""Tiny random classifiers: reproducible, distinct, and responsive to optimisation."""

from __future__ import annotations

import torch

from digin_cli.api.builders import preset
from digin_cli.classifiers.tiny import TinyClassifier


def test_deterministic_and_leaves_global_rng_alone(images):
    torch.manual_seed(123)
    before = torch.rand(3)
    torch.manual_seed(123)
    a = TinyClassifier(0)
    after = torch.rand(3)
    torch.testing.assert_close(before, after)  # building a classifier must not consume the run's random stream
    b = TinyClassifier(0)
    torch.testing.assert_close(a(images), b(images), rtol=0, atol=0)


def test_tiny_a_and_b_differ(images, classifier_conf):
    from hydra.utils import instantiate

    a = instantiate(preset("classifier", "tiny_a"))
    b = instantiate(preset("classifier", "tiny_b"))
    with torch.no_grad():
        pa, pb = a(images).softmax(-1), b(images).softmax(-1)
    assert (pa - pb).abs().max() > 1e-3
    assert a.features(images).shape == (4, 64) and b.features(images).shape == (4, 96)


def test_logits_vary_across_images_and_features_feed_the_head(make_images):
    clf = TinyClassifier(0)
    x = make_images(16, seed=1)
    with torch.no_grad():
        logits, feats = clf.logits_and_features(x)
        p = logits.softmax(-1)
    assert len(set(p.argmax(-1).tolist())) >= 3  # not one constant prediction
    assert p.max() > 5 * (1 / 1000)
    torch.testing.assert_close(clf.model.fc(feats), logits)


def test_gradient_ascent_on_the_input_raises_p_y(make_images):
    clf = TinyClassifier(0)
    y = 3
    x = make_images(4, seed=2).requires_grad_(True)
    opt = torch.optim.Adam([x], lr=0.05)
    with torch.no_grad():
        p0 = clf(x).softmax(-1)[:, y].mean().item()
    for _ in range(10):
        loss = -clf(x).log_softmax(-1)[:, y].sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
        with torch.no_grad():
            x.clamp_(0, 1)
    with torch.no_grad():
        p1 = clf(x).softmax(-1)[:, y].mean().item()
    assert p1 > 10 * p0 and p1 > 0.05
