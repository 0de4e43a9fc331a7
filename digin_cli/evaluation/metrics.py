"""The counterfactual literature's metrics, on tensors (no files, no model loading: see ``backbones`` / ``evaluate``).

Sources (peers.md A.2, read in ACE's code ``guillaumejs2403/ACE``):

- **FID** (Heusel et al. 2017): Fréchet distance between Gaussians fitted to Inception pool features (checked
  against torchmetrics' FID in the tests); pytorch-fid, which ACE's ``compute_FID.sh`` calls, gives the same number.
- **KID** (Bińkowski et al. 2018): unbiased MMD² with the cubic polynomial kernel, averaged over random subsets;
  the kernel estimate is torchmetrics' ``poly_mmd``.
- **split-FID** (ACE's "sFID", ``compute_sFID.sh``): the items are shuffled and split in two halves; FID of the first
  half's originals against the second half's counterfactuals and vice versa, averaged. It removes the bias of
  comparing a counterfactual with its own original. Not the spatial sFID of Nash et al. 2021.
- **COUT** (Khorram & Fuxin 2022, C3LT; ACE ``eval_utils/cout_metrics.py``): pixels enter the original in order of
  decreasing |counterfactual − original| (summed over channels, min-max normalised), ``H·W // 50`` per step; the
  area under p(target) minus the area under p(start) along that path (trapezoid, x-axis scaled by step / H·W), in
  [-1, 1].
- **S³** (ACE ``compute_SimSiamSimilarity.py``): cosine similarity of SimSiam encoder outputs of original and
  counterfactual.
- **LPIPS** (Zhang et al. 2018): the ``lpips`` package, the metric's authors' implementation; the region version
  averages LPIPS' spatial map over the region's pixels (DiG-IN's ``masked_lpips.py`` masks the same per-layer
  differences but divides by the whole image).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
import torch


def frechet_distance(a: torch.Tensor, b: torch.Tensor) -> float:
    """d² = ‖μ_a − μ_b‖² + Tr(Σ_a + Σ_b − 2 (Σ_a Σ_b)^½) of feature sets ``a`` (N, D) and ``b`` (M, D), in float64.

    The covariances are the unbiased sample covariances (N − 1), as pytorch-fid and torchmetrics. With fewer samples
    than features (any counterfactual set against 2048 Inception features) Σ = AᵀA, Σ_b = BᵀB are low-rank, and
    Tr (Σ_a Σ_b)^½ is exactly the nuclear norm of A Bᵀ (N × M): the eigenvalues of AᵀA BᵀB are the squared singular
    values of A Bᵀ. That is exact and takes milliseconds where scipy's ``sqrtm`` of a singular 2048² matrix takes
    minutes; with more samples than features, ``sqrtm`` as pytorch-fid.
    """
    if len(a) < 2 or len(b) < 2:
        raise ValueError(f"the Fréchet distance needs at least 2 samples per set, got {len(a)} and {len(b)}")
    a, b = a.double().cpu().flatten(1), b.double().cpu().flatten(1)
    mu_a, mu_b = a.mean(0), b.mean(0)
    centred_a, centred_b = (a - mu_a) / math.sqrt(len(a) - 1), (b - mu_b) / math.sqrt(len(b) - 1)
    traces = centred_a.pow(2).sum() + centred_b.pow(2).sum()
    if len(a) * len(b) <= a.shape[1] ** 2:
        cross = torch.linalg.svdvals(centred_a @ centred_b.T).sum()
    else:
        from scipy import linalg

        cov_a, cov_b = (centred_a.T @ centred_a).numpy(), (centred_b.T @ centred_b).numpy()
        root, _ = linalg.sqrtm(cov_a @ cov_b, disp=False)
        cross = torch.tensor(np.trace(root.real))
    return float((mu_a - mu_b).pow(2).sum() + traces - 2 * cross)


def kernel_distance(a: torch.Tensor, b: torch.Tensor, subset_size: int = 1000, subsets: int = 100,
                    seed: int = 0) -> tuple[float, float]:
    """KID (mean, std over ``subsets`` random subsets of ``min(subset_size, N, M)`` features of each set)."""
    from torchmetrics.image.kid import poly_mmd

    size = min(subset_size, len(a), len(b))
    if size < 2:
        raise ValueError(f"KID needs at least 2 samples per set, got {len(a)} and {len(b)}")
    g = torch.Generator().manual_seed(seed)
    a, b = a.double().cpu(), b.double().cpu()
    scores = torch.stack([poly_mmd(a[torch.randperm(len(a), generator=g)[:size]],
                                   b[torch.randperm(len(b), generator=g)[:size]]) for _ in range(subsets)])
    return float(scores.mean()), float(scores.std(unbiased=False))


def split_halves(n: int, seed: int = 0) -> tuple[list[int], list[int]]:
    """ACE's sFID split: a seeded shuffle of ``range(n)`` cut in two; disjoint, together all of ``range(n)`` (with
    an odd ``n`` the first half holds the extra item; ACE's ``head`` / ``tail`` drop it)."""
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
    cut = (n + 1) // 2
    return sorted(order[:cut]), sorted(order[cut:])


def split_fid(originals: torch.Tensor, counterfactuals: torch.Tensor, seed: int = 0) -> float:
    """ACE's "sFID" on features (row i of both = item i): mean of FID(originals of half 1, counterfactuals of half
    2) and FID(originals of half 2, counterfactuals of half 1)."""
    first, second = split_halves(len(originals), seed)
    return 0.5 * (frechet_distance(originals[first], counterfactuals[second])
                  + frechet_distance(originals[second], counterfactuals[first]))


def cout(original: torch.Tensor, counterfactual: torch.Tensor, classify: Callable[[torch.Tensor], torch.Tensor],
         start: int, target: int, num_steps: int = 50, batch_size: int = 16) -> float:
    """COUT of one (1, 3, H, W) pair in [0, 1] under ``classify`` (images -> logits), as ACE computes it."""
    diff = (counterfactual - original).abs().sum(1).flatten()  # (H·W,)
    diff = diff - diff.min()
    diff = diff / diff.max() if diff.max() > 0 else diff  # ACE divides by the max; an unchanged image has 0 / 0
    pixels = diff.numel()
    step = max(1, pixels // num_steps)
    order = torch.argsort(diff, descending=True, stable=True)
    masks = [torch.zeros(pixels)]
    for start_px in range(0, pixels, step):
        mask = masks[-1].clone()
        mask[order[start_px:start_px + step]] = 1
        masks.append(mask)
    h, w = original.shape[-2:]
    p_start, p_target = [], []
    for i in range(0, len(masks), batch_size):
        m = torch.stack(masks[i:i + batch_size]).view(-1, 1, h, w).to(original.device)
        with torch.no_grad():
            probs = classify(counterfactual * m + original * (1 - m)).softmax(-1)
        p_start.append(probs[:, start].double().cpu())
        p_target.append(probs[:, target].double().cpu())
    c, c_prime = torch.cat(p_start), torch.cat(p_target)

    def area(curve: torch.Tensor) -> float:
        return float(curve[0] / 2 + curve[1:-1].sum() + curve[-1] / 2) * step / pixels

    return area(c_prime) - area(c)


def lpips_distances(model, original: torch.Tensor, counterfactual: torch.Tensor,
                    region: torch.Tensor | None = None) -> tuple[float, float | None]:
    """LPIPS of a (1, 3, H, W) pair in [0, 1] (``model`` an ``lpips.LPIPS``): the standard whole-image value and,
    with ``region`` (1, 1, H, W) in [0, 1], the mean of LPIPS' spatial map over the region."""
    spatial_flag = model.spatial
    try:
        with torch.no_grad():
            model.spatial = False
            whole = float(model(original, counterfactual, normalize=True).mean())
            if region is None:
                return whole, None
            model.spatial = True
            spatial = model(original, counterfactual, normalize=True)  # (1, 1, H, W), upsampled per layer
    finally:
        model.spatial = spatial_flag
    region = torch.nn.functional.interpolate(region.float(), size=spatial.shape[-2:], mode="bilinear")
    total = float(region.sum())
    return whole, (float((spatial * region).sum()) / total if total > 0 else None)


def simsiam_similarity(encoder, original: torch.Tensor, counterfactual: torch.Tensor) -> float:
    """S³: cosine similarity of the SimSiam encoder's outputs (ImageNet normalisation, as ACE's loader)."""
    mean = torch.tensor([0.485, 0.456, 0.406], device=original.device).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225], device=original.device).view(1, 3, 1, 1)
    with torch.no_grad():
        z = encoder(torch.cat([original, counterfactual]).sub(mean).div(std))
    return float(torch.nn.functional.cosine_similarity(z[:1], z[1:], dim=1))


def mean_median(values: Sequence[float | None]) -> tuple[float | None, float | None]:
    """Mean and median of the finite values (None when there are none)."""
    kept = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    if not kept:
        return None, None
    return float(np.mean(kept)), float(np.median(kept))
