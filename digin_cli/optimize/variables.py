"""What the loop optimises: a variables object gives it Adam parameter groups, the sampler inputs of each iterate
and a projection after each step.

:class:`SamplerDeltas` are DiG-IN's (z_T and per-step deltas, Algorithm 1); :class:`PromptVariables` DiffExplainer's
(Eq. 3-5: a learnable prompt, optionally a new z_T per iterate drawn from the seed stream (seed, iterate) through the
sampler's ``seeded_start``, the expectation over z of the paper).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch

from digin_cli.generation.prompts import SoftPrompt
from digin_cli.generation.sampler import DDIMSampler
from digin_cli.optimize.settings import OptimSettings


@dataclass
class SamplerInputs:
    """What one iterate feeds the sampler."""

    z_T: torch.Tensor
    cond: torch.Tensor
    uncond: torch.Tensor | None
    noise: object | None = None
    """The stochastic sampler's recorded noise (``seeded_start``); None for DDIM."""


class Variables(Protocol):
    """What the loop asks of the thing it optimises; it owns nothing else."""

    def param_groups(self) -> list[dict]:
        """The optimiser's parameter groups (params + learning rate)."""

    def inputs(self, iterate: int, train: bool) -> SamplerInputs:
        """The sampler inputs of ``iterate`` (``train``: with grad, sampled; else the evaluation inputs)."""

    def project(self) -> None:
        """Called after every optimiser step (constraints on the variables)."""

    def snapshot(self, inputs: SamplerInputs) -> dict[str, torch.Tensor]:
        """Detached copies of what re-renders this iterate (``OptimResult.inputs``)."""


class SamplerDeltas:
    """DiG-IN's variables (Algorithm 1): z_T, per-step conditioning deltas ΔC_t and null-text deltas Δ∅_t.

    Adam groups with the authors' learning-rate factors; after every step z_T is projected back to its initial L2
    norm (the sphere where N(0, I) noise lives; drifting off it leaves SD's training distribution).
    """

    def __init__(self, z_T: torch.Tensor, cond: torch.Tensor, uncond: torch.Tensor | None, settings: OptimSettings,
                 num_steps: int, noise: object | None = None):
        s, T = settings, num_steps
        self.cond, self.uncond, self.noise = cond, uncond, noise
        self.z = z_T.detach().clone().float().requires_grad_(s.optimize_latent)
        self.init_norm = self.z.detach().norm()

        def delta(base, wanted):
            shape = (T, *base.shape[-3:]) if s.per_step_deltas else base.shape[-3:]
            return torch.zeros(shape, device=base.device, requires_grad=wanted)

        self.dc = delta(cond, s.optimize_cond)
        self.du = delta(uncond, s.optimize_uncond) if uncond is not None else None
        self.groups = [{"params": [self.z], "lr": s.lr * s.latent_lr_factor}] if s.optimize_latent else []
        if s.optimize_cond:
            self.groups.append({"params": [self.dc], "lr": s.lr * s.cond_lr_factor})
        if s.optimize_uncond and self.du is not None:
            self.groups.append({"params": [self.du], "lr": s.lr * s.uncond_lr_factor})

    def param_groups(self) -> list[dict]:
        return self.groups

    def inputs(self, iterate: int, train: bool) -> SamplerInputs:
        uncond = self.uncond + self.du if self.du is not None else self.uncond
        return SamplerInputs(self.z, self.cond + self.dc, uncond, self.noise)

    @torch.no_grad()
    def project(self) -> None:
        self.z.mul_(self.init_norm / self.z.norm())

    def snapshot(self, inputs: SamplerInputs) -> dict[str, torch.Tensor]:
        return {"z_T": inputs.z_T.detach().clone(), "cond": inputs.cond.detach().clone(),
                "uncond": inputs.uncond.detach().clone() if inputs.uncond is not None else None}


def stream_seed(seed: int, index: int, stream: int = 0) -> int:
    """The ``index``-th seed of ``seed``'s stream: stream 0 gives iterate ``index``'s z_T, stream 1 the samples drawn
    after optimisation, so explanation samples never reuse a z the optimisation saw (numpy ``SeedSequence``)."""
    spawn_key = (int(stream),) if stream else ()
    return int(np.random.SeedSequence([int(seed), int(index)], spawn_key=spawn_key).generate_state(1)[0])


class PromptVariables:
    """DiffExplainer's variables (Eq. 3-5): the learnable rows of a :class:`SoftPrompt` (or a hard prompt's logits).

    Each iterate encodes the prompt (a straight-through Gumbel sample of a hard prompt while training, its argmax
    when evaluating) and starts from z_T = ``sampler.seeded_start(s)``: s = :func:`stream_seed` (seed, iterate) when
    ``settings.fresh_latent`` (the paper: "a new z at each optimization step", so t* does not overfit one z), else
    ``seed`` itself (DEXTER's fixed z).
    """

    def __init__(self, prompt: SoftPrompt, sampler: DDIMSampler, seed: int, settings: OptimSettings,
                 uncond: torch.Tensor | None = None):
        self.prompt, self.sampler, self.seed, self.uncond = prompt, sampler, int(seed), uncond
        self.fresh, self.steps = bool(settings.fresh_latent), int(settings.steps)
        self.prompt_state: dict | None = None
        """A hard prompt's state (text, top probability, ...) when the last iterate's inputs were drawn."""
        self.groups = [{"params": [p for p in prompt.parameters() if p.requires_grad],
                        "lr": settings.lr * settings.cond_lr_factor}]

    def param_groups(self) -> list[dict]:
        return self.groups

    def latent_seed(self, iterate: int) -> int:
        return stream_seed(self.seed, iterate) if self.fresh else self.seed

    def inputs(self, iterate: int, train: bool) -> SamplerInputs:
        z_T, noise = self.sampler.seeded_start(self.latent_seed(iterate))
        if train and hasattr(self.prompt, "set_progress"):  # a hard prompt's temperature schedule
            self.prompt.set_progress(iterate / max(self.steps - 1, 1))
        uncond = self.uncond if self.sampler.guided else None
        cond = self.prompt(sample=train)
        # Read by per-iterate callbacks, which run after the step has moved the prompt.
        self.prompt_state = self.prompt.state() if hasattr(self.prompt, "state") else None
        return SamplerInputs(z_T, cond, uncond, noise)

    def project(self) -> None:
        pass

    def snapshot(self, inputs: SamplerInputs) -> dict[str, torch.Tensor]:
        state = {f"prompt.{k}": v.detach().clone() for k, v in self.prompt.state_dict().items()}
        return {**state, "z_T": inputs.z_T.detach().clone(), "cond": inputs.cond.detach().clone()}
