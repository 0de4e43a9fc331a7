"""The one DiG-IN optimisation loop (paper Eq. 2, Algorithm 1), shared by every task.

Optimises the sampler inputs — initial latent z_T, per-step conditioning deltas ΔC_t and per-step null-text deltas
Δ∅_t — with Adam parameter groups, by backpropagating a classifier objective through the whole DDIM chain.
Choices that follow the authors' code: z_T is projected back to its initial L2 norm after every step; the training
loss is a linearly weighted sum over the images of the last k steps (x0-predictions, the final one being z_0 itself,
the image we output), each seen through random cutouts; every iterate's plain image is scored without augmentation
and the best one is returned, iterate 0 being the unoptimised SD image; a non-finite loss ends the run for that item
with the error recorded and the best iterate so far kept.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial

import torch

from digin_cli.generation.sampler import DDIMSampler, SamplerHooks
from digin_cli.io.progress import track

Objective = Callable[..., tuple[torch.Tensor, dict[str, float]]]
"""``objective(images, augment, latents)`` -> (loss, metrics); see :mod:`digin_cli.objectives`."""


@dataclass
class OptimSettings:
    """What the ``optimizer`` config group holds (authors' defaults)."""

    steps: int = 20
    lr: float = 0.01
    latent_lr_factor: float = 0.1
    cond_lr_factor: float = 1.0
    uncond_lr_factor: float = 1.0
    optimize_latent: bool = True
    optimize_cond: bool = True
    optimize_uncond: bool = True
    per_step_deltas: bool = True
    loss_steps: int = 3
    grad_clip: float | None = None
    optimizer: Callable = field(default=partial(torch.optim.Adam))

    def __post_init__(self):
        if self.steps < 0:
            raise ValueError("optimizer.steps must be >= 0")
        if self.loss_steps < 1:
            raise ValueError("optimizer.loss_steps must be >= 1")


@dataclass
class Iterate:
    index: int
    image: torch.Tensor
    """The plain (non-augmented) final image of this iterate, (1,3,H,W) on CPU."""
    loss: float
    metrics: dict[str, float]


@dataclass
class OptimResult:
    iterates: list[Iterate]
    best_index: int
    error: str | None = None
    seconds: float = 0.0
    inputs: dict[str, torch.Tensor] = field(default_factory=dict)
    """The best iterate's z_T, conditioning and null-text (detached), to re-render or continue from."""

    @property
    def best(self) -> Iterate:
        return self.iterates[self.best_index]

    @property
    def initial(self) -> Iterate:
        return self.iterates[0]


def linear_weights(k: int) -> list[float]:
    """The authors' 'linear' schedule over the last k steps: 1/6, 2/6, 3/6 for k = 3."""
    total = k * (k + 1) / 2
    return [(j + 1) / total for j in range(k)]


class DiginOptimizer:
    """Optimise sampler inputs so that generated images minimise an objective.

    Args:
        sampler: the differentiable DDIM sampler.
        settings: learning rates, steps and which variables to optimise.
        hooks: per-step sampler hooks (prompt-to-prompt injection, mask blending), fixed during optimisation.
    """

    def __init__(self, sampler: DDIMSampler, settings: OptimSettings, hooks: SamplerHooks | None = None):
        self.sampler, self.settings, self.hooks = sampler, settings, hooks

    def render(self, z_T: torch.Tensor, cond: torch.Tensor, uncond: torch.Tensor | None
               ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Latents and images in [0, 1] of the last k steps; the last pair is z_0 and its image, the iterate's."""
        k = min(self.settings.loss_steps, self.sampler.num_steps)
        out = self.sampler.sample(z_T, cond, uncond, keep_last=k, hooks=self.hooks)
        latents = out.x0_predictions[:-1] + [out.latents]
        return latents, [self.sampler.decode(z) for z in latents]

    def _variables(self, z_T, cond, uncond):
        s, T = self.settings, self.sampler.num_steps
        z = z_T.detach().clone().float().requires_grad_(s.optimize_latent)

        def delta(base, wanted):
            shape = (T, *base.shape[-3:]) if s.per_step_deltas else base.shape[-3:]
            return torch.zeros(shape, device=base.device, requires_grad=wanted)

        dc = delta(cond, s.optimize_cond)
        du = delta(uncond, s.optimize_uncond) if uncond is not None else None
        groups = [{"params": [z], "lr": s.lr * s.latent_lr_factor}] if s.optimize_latent else []
        if s.optimize_cond:
            groups.append({"params": [dc], "lr": s.lr * s.cond_lr_factor})
        if s.optimize_uncond and du is not None:
            groups.append({"params": [du], "lr": s.lr * s.uncond_lr_factor})
        return z, dc, du, groups

    def run(self, z_T: torch.Tensor, cond: torch.Tensor, uncond: torch.Tensor | None, objective: Objective,
            description: str = "optimising") -> OptimResult:
        s = self.settings
        start = time.perf_counter()
        z, dc, du, groups = self._variables(z_T, cond, uncond)
        optimizer = s.optimizer(groups) if groups else None
        init_norm = z.detach().norm()
        weights = linear_weights(min(s.loss_steps, self.sampler.num_steps))
        iterates: list[Iterate] = []
        best_inputs: dict[str, torch.Tensor] = {}
        error = None
        for it in track(range(s.steps + 1), description):
            train = it < s.steps and optimizer is not None
            with torch.set_grad_enabled(train):
                c, u = cond + dc, (uncond + du if du is not None else uncond)
                latents, images = self.render(z, c, u)
            with torch.no_grad():
                loss, metrics = objective(images[-1].detach(), False, latents[-1].detach())
            loss_value = float(loss)
            iterates.append(Iterate(it, images[-1].detach().cpu(), loss_value, metrics))
            if not math.isfinite(loss_value):
                error = f"non-finite loss at iterate {it}; kept the best iterate so far"
                break
            if min(iterates, key=lambda i: i.loss).index == it:
                best_inputs = {"z_T": z.detach().clone(), "cond": c.detach().clone(),
                               "uncond": u.detach().clone() if u is not None else None}
            if not train:
                continue
            train_loss = sum(w * objective(img, True, lat)[0] for w, img, lat in zip(weights, images, latents))
            if not torch.isfinite(train_loss):
                error = f"non-finite training loss at iterate {it}; kept the best iterate so far"
                break
            optimizer.zero_grad(set_to_none=True)
            train_loss.backward()
            if s.grad_clip:
                torch.nn.utils.clip_grad_norm_([p for g in groups for p in g["params"]], s.grad_clip)
            optimizer.step()
            with torch.no_grad():
                # Keep z_T on the sphere where N(0, I) noise lives; drifting off it leaves SD's training distribution.
                z.mul_(init_norm / z.norm())
        finite = [i for i in iterates if math.isfinite(i.loss)]
        best = min(finite, key=lambda i: i.loss).index if finite else 0
        return OptimResult(iterates, best, error, time.perf_counter() - start, best_inputs)
