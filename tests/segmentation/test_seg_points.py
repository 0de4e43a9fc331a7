"""squash and foreground point sampling: the authors' rule (default) and digin's diversification (option)."""

import math

import pytest
import torch

from digin_cli.segmentation.points import mean_pairwise_distance, sample_points, squash


def test_squash_numbers():
    A = torch.tensor([0.0, 0.2, 0.3, 0.475, 0.65, 1.0])
    expected = torch.tensor([0.0, 0.0, 0.0, 0.5, math.sqrt(0.5), 1.0])
    assert torch.allclose(squash(A, 0.3), expected, atol=1e-6)
    assert torch.allclose(squash(torch.tensor([0.75]), 0.5), torch.tensor([math.sqrt(0.5)]))
    with pytest.raises(ValueError):
        squash(A, 1.0)


def _blob(size=64, cx=32, cy=32, sigma=8.0):
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    return torch.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * sigma**2))


def _two_blobs(size=64, radius=6):
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    a = ((xx - 14) ** 2 + (yy - 14) ** 2) <= radius**2
    b = ((xx - 50) ** 2 + (yy - 50) ** 2) <= radius**2
    return (a | b).float(), a, b


def test_points_above_threshold_and_shape():
    A = squash(_blob())
    for sampling in ("authors", "spread"):
        pts = sample_points(A, num=5, threshold=0.35, generator=torch.Generator().manual_seed(1), sampling=sampling)
        assert pts.shape == (5, 2) and pts.dtype == torch.long
        x, y = pts[:, 0], pts[:, 1]
        assert (A[y, x] > 0.35).all()  # (x, y) = (column, row)
    assert len({tuple(p) for p in pts.tolist()}) == 5  # spread: no repeats
    with pytest.raises(ValueError, match="sampling"):
        sample_points(A, sampling="spreading")


def test_points_xy_convention():
    A = torch.zeros(10, 20)
    A[7, 15] = 1.0  # row 7, column 15
    pts = sample_points(A, num=1, threshold=0.5)
    assert pts.tolist() == [[15, 7]]


def test_points_deterministic_with_generator():
    A = torch.rand(32, 32)
    one = sample_points(A, 5, 0.35, generator=torch.Generator().manual_seed(3))
    two = sample_points(A, 5, 0.35, generator=torch.Generator().manual_seed(3))
    other = sample_points(A, 5, 0.35, generator=torch.Generator().manual_seed(4))
    assert torch.equal(one, two)
    assert not torch.equal(one, other)


def test_points_fallback_to_argmax_and_repeats():
    A = torch.full((8, 8), 0.1)
    A[2, 5] = 0.2  # nothing passes 0.35: the peak is the only candidate, repeated
    pts = sample_points(A, num=5, threshold=0.35, generator=torch.Generator().manual_seed(0))
    assert pts.tolist() == [[5, 2]] * 5


def test_points_fewer_candidates_than_points():
    A = torch.zeros(8, 8)
    A[1, 1] = A[6, 6] = 1.0
    pts = sample_points(A, num=4, threshold=0.5, generator=torch.Generator().manual_seed(0), sampling="spread")
    assert {tuple(p) for p in pts.tolist()} == {(1, 1), (6, 6)}


def test_diversification_reaches_both_blobs():
    A, a, b = _two_blobs()
    hits = {}
    for frac in (0.0, 0.25):
        both = 0
        for seed in range(100):
            pts = sample_points(A, num=2, threshold=0.35, generator=torch.Generator().manual_seed(seed),
                                min_distance_frac=frac, sampling="spread")
            x, y = pts[:, 0], pts[:, 1]
            both += bool(a[y, x].any() and b[y, x].any())
        hits[frac] = both
    assert hits[0.25] >= 85          # the second point is pushed into the other blob
    assert hits[0.25] > hits[0.0] + 20  # plain sampling picks the same blob about half the time


def test_diversification_spreads_points_on_one_object():
    A = squash(_blob(sigma=12.0))
    plain, diverse = [], []
    for seed in range(60):
        plain.append(mean_pairwise_distance(sample_points(A, 5, 0.35, torch.Generator().manual_seed(seed), 0.0,
                                                          "spread")))  # without replacement, no damping
        diverse.append(mean_pairwise_distance(sample_points(A, 5, 0.35, torch.Generator().manual_seed(seed), 0.1,
                                                            "spread")))
    assert sum(diverse) / len(diverse) > 1.15 * sum(plain) / len(plain)


def test_authors_rule_histogram_matches_the_map_values():
    """The default (the authors' rule): 5 independent draws with replacement, P(pixel) = value / sum of values above
    the threshold. A planted map with four plateaus of known values: over 4000 seeded draws (800 calls x 5 points)
    each plateau's share of the points must match its share of the value mass within 0.025 (4 binomial standard
    errors at n = 4000 is <= 0.032; the seeds make the numbers fixed), and the chi-square test must not reject.
    digin's spread rule gives the low plateaus more than their share, and the chi-square test rejects it."""
    from scipy.stats import chisquare

    A = torch.zeros(40, 40)
    values = {(0, 0): 1.0, (0, 20): 0.8, (20, 0): 0.6, (20, 20): 0.4}  # 10x10 plateaus
    for (r, c), v in values.items():
        A[r:r + 10, c:c + 10] = v
    A[35, 35] = 0.3  # below the threshold: never drawn
    expected = torch.tensor(list(values.values())) / sum(values.values())

    def shares(sampling):
        counts = torch.zeros(4)
        for seed in range(800):
            pts = sample_points(A, 5, 0.35, torch.Generator().manual_seed(seed), sampling=sampling)
            for x, y in pts.tolist():
                assert A[y, x] > 0.35
                counts[2 * (y >= 20) + (x >= 20)] += 1
        return counts

    counts = shares("authors")
    assert counts.sum() == 4000
    assert (counts / 4000 - expected).abs().max() < 0.025, (counts / 4000, expected)
    assert chisquare(counts.numpy(), (expected * 4000).numpy()).pvalue > 0.001
    # with replacement: the same pixel may come twice in one call (1 in 400 pixels, so repeats across 800 calls)
    repeats = sum(len({tuple(p) for p in sample_points(A, 5, 0.35, torch.Generator().manual_seed(s)).tolist()}) < 5
                  for s in range(800))
    assert repeats > 0
    spread = shares("spread")  # damping near earlier points moves mass to the low plateaus: the test tells it apart
    assert chisquare(spread.numpy(), (expected * 4000).numpy()).pvalue < 1e-3  # the level the authors rule passes
