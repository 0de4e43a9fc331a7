"""Feature statistics on a synthetic linear classifier with planted features: hand computations and the cache."""

from __future__ import annotations

import os

import pytest
import torch
from PIL import Image
from torch import nn

from digin_cli.classifiers.base import Classifier
from digin_cli.data.images import class_image_files, load_inputs
from digin_cli.errors import DiginError
from digin_cli.features import FeatureCache, class_feature_ranking, image_features, npca, top_activating

RES = 16
CLASSES = ["c0", "c1", "c2", "c3"]


class Pooled(Classifier):
    """Linear classifier on the 2x2 average-pooled image: φ = 12 quadrant colour means (channel-major)."""

    def __init__(self):
        torch.manual_seed(3)
        net = nn.Sequential(nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(12, len(CLASSES)))
        super().__init__(net, CLASSES, 8, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0))
        self.calls = 0

    def _logits_and_features(self, x):
        self.calls += 1
        f = self.model[1](self.model[0](x))
        return self.model[2](f), f

    def head(self):
        return self._linear(self.model[2], "pooled")


def quadrant_image(red_top_left: float, rng: torch.Generator) -> Image.Image:
    """Grey image with small noise per quadrant; the top-left quadrant's red is the planted feature."""
    base = 0.5 + 0.04 * torch.randn(3, 2, 2, generator=rng)
    base[0, 0, 0] = red_top_left
    pixels = base.clamp(0, 1).repeat_interleave(32, 1).repeat_interleave(32, 2)
    return Image.fromarray((pixels.permute(1, 2, 0) * 255).round().to(torch.uint8).numpy())


@pytest.fixture(scope="module")
def train(tmp_path_factory):
    root = tmp_path_factory.mktemp("train")
    rng = torch.Generator().manual_seed(0)
    reds = torch.rand(24, generator=rng)
    for c in CLASSES:
        (root / f"n{c}").mkdir()
    for i, red in enumerate(reds):
        quadrant_image(float(red), rng).save(root / "nc1" / f"{i:03d}.png")
    quadrant_image(0.3, rng).save(root / "nc2" / "only.png")
    return root, reds


def hand_features(clf, files):
    images = torch.cat([load_inputs(str(f), RES)[0].image for f in files])
    with torch.no_grad():
        return clf.features(images)


def test_ranking_npca_and_top_activating_equal_hand_computation(train, tmp_path):
    root, reds = train
    clf = Pooled()
    files = class_image_files(root, 1, CLASSES)
    assert [f.name for f in files] == [f"{i:03d}.png" for i in range(24)]
    feats = image_features(clf, files, RES, FeatureCache(tmp_path), "pooled", batch_size=5)
    ref = hand_features(clf, files)
    torch.testing.assert_close(feats, ref, rtol=0, atol=1e-6)
    w, _ = clf.head()

    ranking = class_feature_ranking(feats, w, 1, top_k=3)
    scores = ref.mean(0) * w[1]
    order = scores.argsort(descending=True)[:3].tolist()
    assert [r["feature"] for r in ranking] == order and [r["rank"] for r in ranking] == [1, 2, 3]
    assert ranking[0]["score"] == pytest.approx(float(scores[order[0]]), abs=1e-6)
    assert ranking[0]["mean_activation"] * ranking[0]["weight"] == pytest.approx(ranking[0]["score"], rel=1e-5)

    comps = npca(feats, w[1])
    contributions = ref * w[1]
    centred = contributions - contributions.mean(0)
    cov = centred.T @ centred / (len(ref) - 1)
    eigvals, eigvecs = torch.linalg.eigh(cov.double())
    torch.testing.assert_close(comps.variances[:3].double(), eigvals.flip(0)[:3], rtol=1e-4, atol=1e-8)
    assert abs(float(comps.components[0].double() @ eigvecs[:, -1])) > 0.999
    # The planted direction: what moving the top-left red from 0 to 1 does to the contributions.
    lo, hi = (clf.features(load_inputs_pil(quadrant_image(v, torch.Generator().manual_seed(5)))) for v in (0.0, 1.0))
    planted = ((hi - lo)[0] * w[1])
    planted = planted * torch.sign(planted.sum())  # the sign that raises the class logit
    cos = float(comps.components[0] @ planted / planted.norm())
    assert cos > 0.99, cos
    # alpha is the centred projection times <v, 1> (Neuhaus et al.'s eigvec_scale), so it covaries positively with
    # the class logit whatever the SVD sign.
    alpha = comps.alpha(feats, 0)
    logits = feats @ w[1]
    assert float(((alpha - alpha.mean()) * (logits - logits.mean())).sum()) > 0
    torch.testing.assert_close(alpha, (centred @ comps.components[0]) * comps.components[0].sum(), rtol=1e-5,
                               atol=1e-6)
    u, offset = comps.direction(0)
    torch.testing.assert_close(feats @ u + offset, alpha, rtol=1e-5, atol=1e-5)

    top, values = top_activating(feats, 0, 3)  # feature 0 = top-left red
    assert top == reds.argsort(descending=True)[:3].tolist()
    assert values == sorted(values, reverse=True)
    top_u, _ = top_activating(feats, u, 2)
    assert top_u == alpha.argsort(descending=True)[:2].tolist()


def load_inputs_pil(pil):
    from digin_cli.data.images import preprocess

    return preprocess(pil, RES)


def test_cache_is_reused_keyed_by_listing_and_atomic(train, tmp_path, monkeypatch):
    root, _ = train
    clf = Pooled()
    cache = FeatureCache(tmp_path / "features")
    files = class_image_files(root, 1, CLASSES)
    first = image_features(clf, files, RES, cache, "pooled", batch_size=8)
    calls = clf.calls
    assert calls == 3  # 24 images in batches of 8: streamed, not one big batch
    (entry,) = cache.root.glob("*.safetensors")
    assert not [p for p in cache.root.iterdir() if p.suffix not in (".safetensors", ".lock")]
    stamp = entry.stat().st_mtime_ns
    again = image_features(clf, files, RES, cache, "pooled", batch_size=8)
    assert clf.calls == calls and entry.stat().st_mtime_ns == stamp  # read back, nothing recomputed or rewritten
    torch.testing.assert_close(again, first, rtol=0, atol=0)
    # Another classifier identity or resolution is another entry.
    image_features(clf, files, RES, cache, "other classifier", batch_size=8)
    assert len(list(cache.root.glob("*.safetensors"))) == 2
    # A torn entry (e.g. from a crashed writer without atomic rename) is ignored and replaced.
    entry.write_bytes(entry.read_bytes()[:40])
    torch.testing.assert_close(image_features(clf, files, RES, cache, "pooled", batch_size=8), first)
    assert clf.calls > calls
    # Changing a file changes the key: statistics never go stale.
    os.utime(files[0], ns=(files[0].stat().st_atime_ns, files[0].stat().st_mtime_ns + 10**9))
    assert FeatureCache.key("pooled", files, RES) != entry.stem


def test_class_folders_errors(train, tmp_path):
    root, _ = train
    with pytest.raises(DiginError, match="paths.imagenet_train is unset"):
        class_image_files(None, 1, CLASSES)
    with pytest.raises(DiginError, match="class 'c0' has no images"):
        class_image_files(root, 0, CLASSES)
    with pytest.raises(DiginError, match="4 class folders but the classifier has 5"):
        class_image_files(root, 0, CLASSES + ["c4"])
    with pytest.raises(DiginError, match="folder not found"):
        class_image_files(tmp_path / "nope", 0, CLASSES)


@pytest.mark.parametrize("n", [12, 80])  # fewer images than features (components span the data) and more
def test_npca_components_add_up_to_the_centred_class_logit(n):
    """Spurious ImageNet's neural PCA (eigvec_scale=True): with all components, sum_l alpha_l(x) is the class-k
    logit minus its mean over the class images, to 1e-4 (without the <v_l, 1> factor the sum is another number)."""
    g = torch.Generator().manual_seed(n)
    F_ = 24
    feats = torch.rand(n, F_, generator=g) * torch.linspace(0.2, 3, F_)
    weight = torch.randn(5, F_, generator=g)
    k = 3
    comps = npca(feats, weight[k])
    logits = feats @ weight[k]
    total = sum(comps.alpha(feats, l) for l in range(len(comps.components)))
    torch.testing.assert_close(total, logits - logits.mean(), rtol=0, atol=1e-4)
    unscaled = sum((feats * weight[k] - comps.mean) @ v for v in comps.components)
    assert (unscaled - (logits - logits.mean())).abs().max() > 1e-2
    # The same through the feature-space direction the tasks optimise, and the variances in order.
    total_dir = sum(feats @ u + o for u, o in map(comps.direction, range(len(comps.components))))
    torch.testing.assert_close(total_dir, logits - logits.mean(), rtol=0, atol=1e-4)
    assert (comps.variances[:-1] >= comps.variances[1:]).all()
    # alpha does not depend on the SVD's arbitrary sign.
    flipped = type(comps)(-comps.components, comps.variances, comps.mean, comps.weight)
    torch.testing.assert_close(flipped.alpha(feats, 1), comps.alpha(feats, 1))


def test_top_activating_over_all_class_folders_streams_through_the_cache(train, tmp_path):
    """The top real images of a neuron come from every class folder (empty ones skipped), one folder at a time
    through the cache: the same as ranking all images at once, and the class-statistics entry is reused."""
    from digin_cli.features import top_activating_in_folders

    root, reds = train
    clf = Pooled()
    cache = FeatureCache(tmp_path / "features")
    folders = sorted(p for p in root.iterdir() if p.is_dir())
    files = [f for d in folders for f in sorted(d.glob("*.png"))]
    ref = hand_features(clf, files)
    image_features(clf, class_image_files(root, 1, CLASSES), RES, cache, "pooled", batch_size=8)  # class statistics
    calls = clf.calls
    top = top_activating_in_folders(clf, folders, {"red": 0, "green": 4}, 3, RES, cache, "pooled", batch_size=8)
    assert clf.calls == calls + 1  # only the other class folder (one image) is extracted; nc1 is read from the cache
    for key, n in (("red", 0), ("green", 4)):
        order = ref[:, n].argsort(descending=True)[:3].tolist()
        assert [p for p, _ in top[key]] == [files[i] for i in order]
        torch.testing.assert_close(torch.tensor([v for _, v in top[key]]), ref[order, n], rtol=0, atol=1e-6)
    assert top["red"][0][0].parent.name == "nc1" and top["red"][0][0].name == f"{int(reds.argmax()):03d}.png"
