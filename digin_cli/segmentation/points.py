"""From a normalised cross-attention map to foreground point prompts.

Two steps of DiG-IN's foreground mask (official code, ``foreground_segmentation.py``):

* :func:`squash` — the ``sqrt_0.3`` squash of the max-normalised attention map, ``sqrt(clamp(A - t, 0) / (1 - t))``.
* :func:`sample_points` — foreground points drawn with probability proportional to the squashed map among pixels above
  ``sam_foreground_threshold`` (0.35). ``sampling="authors"`` (the default) is what their code does: ``num``
  independent draws *with replacement* from that one distribution (they compute a distance-based diversification
  but sample from ``Categorical(vals_normalized)``, so it is never used). ``sampling="spread"`` is digin's real
  diversification: draws without replacement, each from probabilities damped near the points already chosen. It
  spreads prompts over the object, but pushes them toward the region's coarse edge, where SAM picks up background;
  hence it is an option, not the default.
"""

from __future__ import annotations

import torch


def squash(A: torch.Tensor, threshold: float = 0.3) -> torch.Tensor:
    """``sqrt(clamp(A - t, 0) / (1 - t))``: values at or below ``t`` become 0, 1 stays 1 (the authors' ``sqrt_0.3``)."""
    if not 0.0 <= threshold < 1.0:
        raise ValueError(f"squash threshold must be in [0, 1), got {threshold}")
    return torch.sqrt(torch.clamp(A - threshold, min=0.0) / (1.0 - threshold))


def _as_2d(A: torch.Tensor) -> torch.Tensor:
    A = torch.as_tensor(A)
    while A.dim() > 2:
        if A.shape[0] != 1:
            raise ValueError(f"expected one (H, W) map, got shape {tuple(A.shape)}")
        A = A[0]
    if A.dim() != 2:
        raise ValueError(f"expected an (H, W) map, got shape {tuple(A.shape)}")
    return A


SAMPLING = ("authors", "spread")


def sample_points(A: torch.Tensor, num: int = 5, threshold: float = 0.35, generator: torch.Generator | None = None,
                  min_distance_frac: float = 0.1, sampling: str = "authors") -> torch.Tensor:
    """Sample ``num`` foreground points from the map ``A`` (H, W), returned as ``(num, 2)`` integer ``(x, y)`` pixels.

    ``x`` is the column and ``y`` the row, the pixel-index convention of SAM point prompts.

    * Candidates are the pixels with ``A > threshold``; each is drawn with probability proportional to its value.
    * ``sampling="authors"``: the ``num`` draws are independent and with replacement (the authors'
      ``foreground_segmentation.py``); ``min_distance_frac`` is ignored.
    * ``sampling="spread"``: after each draw every candidate's weight is multiplied by ``1 - exp(-d^2 / (2 sigma^2))``,
      ``d`` its distance to the point just chosen and ``sigma = min_distance_frac * max(H, W)``.
      A chosen pixel therefore gets weight 0 (no repeats), and its neighbourhood is strongly discouraged.
      ``min_distance_frac=0`` switches diversification off (plain sampling without replacement).
    * If no pixel passes the threshold, the argmax pixel(s) are the candidates. If ``spread`` runs out of candidates
      (fewer than ``num`` of them), the remaining draws repeat earlier points, so the result always holds ``num`` rows.

    Deterministic given ``generator`` (a CPU ``torch.Generator``); all work happens on the CPU.
    """
    if num < 1:
        raise ValueError(f"num must be >= 1, got {num}")
    if sampling not in SAMPLING:
        raise ValueError(f"sampling must be one of {SAMPLING}, got {sampling!r}")
    A = _as_2d(A).detach().to("cpu", torch.float64)
    height, width = A.shape
    ys, xs = torch.nonzero(A > threshold, as_tuple=True)
    if ys.numel() == 0:  # nothing passes: the peak pixel(s) are the only candidates, equally likely
        ys, xs = torch.nonzero(A == A.max(), as_tuple=True)
        base = torch.ones(ys.numel(), dtype=torch.float64)
    else:
        base = A[ys, xs].clone()
    coords = torch.stack([xs, ys], dim=1)  # (N, 2) as (x, y)
    if sampling == "authors":
        idx = torch.multinomial(base / base.sum(), num, replacement=True, generator=generator)
        return coords[idx].to(torch.long)
    coords_f = coords.to(torch.float64)
    sigma = float(min_distance_frac) * max(height, width)

    weights = base.clone()
    chosen: list[int] = []
    for _ in range(num):
        if weights.sum() <= 0:
            # Diversification suppressed every candidate (or all were used): fall back to the unused ones, then
            # to repeats of the chosen points.
            unused = torch.ones_like(base, dtype=torch.bool)
            unused[chosen] = False
            weights = torch.where(unused, base, torch.zeros_like(base))
            if weights.sum() <= 0:
                weights = base.clone()
        idx = int(torch.multinomial(weights / weights.sum(), 1, generator=generator).item())
        chosen.append(idx)
        if sigma > 0:
            d2 = ((coords_f - coords_f[idx]) ** 2).sum(dim=1)
            weights = weights * (1.0 - torch.exp(-d2 / (2.0 * sigma**2)))
        else:
            weights = weights.clone()
        weights[idx] = 0.0
    return coords[chosen].to(torch.long)


def mean_pairwise_distance(points: torch.Tensor) -> float:
    """Mean Euclidean distance over all pairs of ``(N, 2)`` points (0 for fewer than two); a diversity measure."""
    p = points.to(torch.float64)
    n = p.shape[0]
    if n < 2:
        return 0.0
    d = torch.cdist(p, p)
    return float(d.sum() / (n * (n - 1)))


__all__ = ["squash", "sample_points", "mean_pairwise_distance", "SAMPLING"]
