"""The metrics of ``digin evaluate`` against closed forms, library references and hand computations, on
random-weight backbones built here and loaded through the same paths as the real weights."""

import math

import numpy as np
import pytest
import torch

from digin_cli.errors import DiginError
from digin_cli.evaluation import backbones as B
from digin_cli.evaluation import metrics as M
from tests.evaluation.pictures import images


def planted(n, mean, variances, seed):
    """n samples whose sample mean is exactly ``mean`` and sample covariance exactly diag(``variances``)."""
    z = torch.randn(n, len(mean), generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    z = z - z.mean(0)
    z = z @ torch.linalg.inv(torch.linalg.cholesky(torch.cov(z.T))).T  # sample covariance = identity
    return torch.tensor(mean, dtype=torch.float64) + z * torch.tensor(variances, dtype=torch.float64).sqrt()


def test_frechet_distance_of_planted_gaussians_equals_the_closed_form():
    mu1, var1, mu2, var2 = [0.0, 1.0, -2.0, 0.5], [1.0, 4.0, 0.25, 2.0], [1.0, -1.0, 0.0, 0.5], [9.0, 1.0, 1.0, 2.0]
    a, b = planted(300, mu1, var1, 1), planted(200, mu2, var2, 2)
    # Commuting (diagonal) covariances: d² = Σ (μ1-μ2)² + Σ (σ1 + σ2 - 2 √(σ1 σ2)) = Σ (μ1-μ2)² + Σ (√σ1 - √σ2)².
    closed = sum((x - y) ** 2 for x, y in zip(mu1, mu2)) + sum((math.sqrt(s) - math.sqrt(t)) ** 2
                                                             for s, t in zip(var1, var2))
    assert closed == pytest.approx((1 + 4 + 4 + 0) + (4 + 1 + 0.25 + 0))  # the numbers above, by hand
    assert M.frechet_distance(a, b) == pytest.approx(closed, rel=1e-9)
    assert M.frechet_distance(a, a) == pytest.approx(0.0, abs=1e-9)


@pytest.mark.parametrize("n, d", [(64, 6), (10, 40)])  # more samples than features (sqrtm), fewer (low rank)
def test_frechet_distance_matches_torchmetrics_fid_on_correlated_features(n, d):
    from torchmetrics.image.fid import FrechetInceptionDistance

    g = torch.Generator().manual_seed(3)
    a = torch.randn(n, d, generator=g, dtype=torch.float64) @ torch.randn(d, d, generator=g, dtype=torch.float64)
    b = torch.randn(n - 2, d, generator=g, dtype=torch.float64) @ torch.randn(d, d, generator=g,
                                                                              dtype=torch.float64) + 1

    class Identity(torch.nn.Module):
        num_features = d

        def forward(self, x):
            return x

    reference = FrechetInceptionDistance(feature=Identity())
    reference.update(a, real=True)
    reference.update(b, real=False)
    assert M.frechet_distance(a, b) == pytest.approx(float(reference.compute()), rel=1e-6)


def test_fid_of_a_set_with_itself_is_zero_and_grows_with_a_shift(random_inception):
    x = random_inception(images(6, 0))
    assert x.shape == (6, 2048)
    assert M.frechet_distance(x, x) == pytest.approx(0.0, abs=1e-6)
    near, far = random_inception(images(6, 0, shift=0.05)), random_inception(images(6, 0, shift=0.3))
    assert 0 < M.frechet_distance(x, near) < M.frechet_distance(x, far)


def test_kid_near_zero_for_one_distribution_and_positive_for_another():
    g = torch.Generator().manual_seed(4)
    a, b, c = (torch.randn(200, 8, generator=g) for _ in range(3))
    same, _ = M.kernel_distance(a, b, subset_size=100, subsets=20)
    other, _ = M.kernel_distance(a, c + 1.0, subset_size=100, subsets=20)
    assert abs(same) < 0.05 < other


def test_kid_equals_torchmetrics_on_the_whole_sets():
    from torchmetrics.image.kid import KernelInceptionDistance

    g = torch.Generator().manual_seed(6)
    a, b = torch.randn(30, 5, generator=g, dtype=torch.float64), torch.randn(30, 5, generator=g, dtype=torch.float64)

    class Identity(torch.nn.Module):
        num_features = 5

        def forward(self, x):
            return x

    reference = KernelInceptionDistance(feature=Identity(), subsets=1, subset_size=30)
    reference.update(a, real=True)
    reference.update(b + 0.5, real=False)
    # One subset of every sample: no sampling left, the two unbiased MMD² estimates must agree exactly.
    assert M.kernel_distance(a, b + 0.5, subset_size=30, subsets=1)[0] == pytest.approx(
        float(reference.compute()[0]), rel=1e-9)


@pytest.mark.parametrize("n", range(1, 10))
def test_split_fid_halves_are_disjoint_and_cover_the_set(n):
    first, second = M.split_halves(n, seed=7)
    assert not set(first) & set(second)
    assert sorted(first + second) == list(range(n))
    assert abs(len(first) - len(second)) <= 1
    assert M.split_halves(n, seed=7) == (first, second)


def test_split_fid_averages_the_two_cross_half_distances():
    g = torch.Generator().manual_seed(5)
    originals, counterfactuals = torch.randn(10, 3, generator=g), torch.randn(10, 3, generator=g) + 2
    first, second = M.split_halves(10, seed=1)
    expected = (M.frechet_distance(originals[first], counterfactuals[second])
                + M.frechet_distance(originals[second], counterfactuals[first])) / 2
    assert M.split_fid(originals, counterfactuals, seed=1) == pytest.approx(expected)
    assert first != list(range(5))  # shuffled, not the first half of the list


def test_cout_on_a_planted_linear_classifier_equals_the_hand_computation():
    torch.manual_seed(0)
    h, w = 2, 3  # 6 pixels: ACE's step max(1, 6 // 50) = 1 pixel per step
    original = torch.rand(1, 3, h, w)
    change = torch.tensor([0.9, 0.1, 0.5, 0.7, 0.3, 0.05]).view(1, 1, h, w)  # distinct: a unique pixel order
    counterfactual = (original + change * torch.tensor([1.0, -0.5, 0.25]).view(1, 3, 1, 1)).clamp(0, 1)
    weights = torch.randn(4, 3 * h * w)
    classify = lambda x: x.flatten(1) @ weights.T  # noqa: E731 — the planted linear classifier
    start, target = 1, 3

    # By hand: pixels ordered by |Δ| summed over channels, the image after k pixels, softmax, trapezoid over 7 points.
    o, c, W = original.double().numpy()[0], counterfactual.double().numpy()[0], weights.double().numpy()
    order = np.argsort(-np.abs(c - o).sum(0).ravel())
    p_start, p_target = [], []
    for k in range(7):
        mask = np.zeros(h * w)
        mask[order[:k]] = 1
        x = c * mask.reshape(h, w) + o * (1 - mask.reshape(h, w))
        logits = W @ x.ravel()
        p = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
        p_start.append(p[start])
        p_target.append(p[target])
    trapezoid = lambda y: (y[0] / 2 + sum(y[1:-1]) + y[-1] / 2) / 6  # noqa: E731
    expected = trapezoid(p_target) - trapezoid(p_start)
    assert M.cout(original, counterfactual, classify, start, target) == pytest.approx(expected, abs=1e-6)
    # The counterfactual toward the class the pixels raise scores positive, the same edit read backwards negative.
    assert M.cout(counterfactual, original, classify, start, target) == pytest.approx(-M.cout(
        counterfactual, original, classify, target, start), abs=1e-9)


def test_cout_is_positive_when_the_edit_moves_the_classifier_to_the_target():
    w = torch.zeros(2, 3 * 4 * 4)
    w[1, :16], w[1, 16:32] = 4.0, -4.0  # class 1 = red minus green: grey images score both classes alike
    classify = lambda x: x.flatten(1) @ w.T  # noqa: E731
    grey, red = torch.full((1, 3, 4, 4), 0.2), torch.full((1, 3, 4, 4), 0.2)
    red[:, 0] = 1.0
    assert M.cout(grey, red, classify, start=0, target=1) > 0.5
    assert M.cout(grey, grey, classify, start=0, target=1) == pytest.approx(0.0, abs=1e-6)  # nothing moves


def test_lpips_holds_the_backbone_file_and_the_packaged_calibration(lpips_and_backbone):
    import lpips

    model, state = lpips_and_backbone
    convs = [i for i in range(13) if f"features.{i}.weight" in state]  # AlexNet's 5 convolutions
    held = [m for name in ("slice1", "slice2", "slice3", "slice4", "slice5")
            for m in getattr(model.net, name).children() if isinstance(m, torch.nn.Conv2d)]
    assert len(held) == len(convs) == 5
    for conv, i in zip(held, convs):
        assert torch.equal(conv.weight, state[f"features.{i}.weight"]), i
    reference = lpips.LPIPS(net="alex", verbose=False, pnet_rand=True)  # the package's own calibration file
    assert torch.equal(model.lin0.model[-1].weight, reference.lin0.model[-1].weight)


def test_lpips_is_zero_on_identical_images_and_grows_with_noise(random_lpips):
    x = images(1, 1)
    g = torch.Generator().manual_seed(2)
    noise = torch.randn(x.shape, generator=g)
    assert M.lpips_distances(random_lpips, x, x)[0] == pytest.approx(0.0, abs=1e-7)
    values = [M.lpips_distances(random_lpips, x, (x + s * noise).clamp(0, 1))[0] for s in (0.02, 0.1, 0.3)]
    assert 0 < values[0] < values[1] < values[2], values


def test_region_lpips_counts_the_region_only(random_lpips):
    x = images(1, 2)
    noisy = x.clone()
    noisy[..., :24] = (noisy[..., :24] + 0.3 * torch.randn_like(noisy[..., :24])).clamp(0, 1)  # left half only
    left = torch.zeros(1, 1, 48, 48)
    left[..., :24] = 1
    whole, in_left = M.lpips_distances(random_lpips, x, noisy, left)
    _, in_right = M.lpips_distances(random_lpips, x, noisy, 1 - left)
    assert in_right < whole < in_left


def test_simsiam_similarity_of_official_format_checkpoint(random_simsiam, tmp_path):
    loaded = B.simsiam_encoder(random_simsiam, torch.device("cpu"))
    x, y = images(1, 3), images(1, 4, shift=0.3)
    assert M.simsiam_similarity(loaded, x, x) == pytest.approx(1.0, abs=1e-5)
    assert M.simsiam_similarity(loaded, x, y) < 1 - 1e-4
    with pytest.raises(DiginError, match="module.encoder"):
        torch.save({"state_dict": {"fc.weight": torch.zeros(1)}}, tmp_path / "bad.pth")
        B.simsiam_encoder(tmp_path / "bad.pth", torch.device("cpu"))


def test_missing_weights_offline_name_the_file_and_how_to_get_it(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(DiginError) as err:
        B.inception(None, torch.device("cpu"))
    message = str(err.value)
    assert "weights-inception-2015-12-05-6726825d.pth" in message and B.INCEPTION_URL in message
    assert "--inception" in message and "\n" not in message
    with pytest.raises(DiginError, match="alexnet-owt-7be5be79.pth.*--lpips-backbone"):
        B.lpips_model("alex", None, torch.device("cpu"))
    with pytest.raises(DiginError, match="not found"):
        B.inception(tmp_path / "nope.pth", torch.device("cpu"))
