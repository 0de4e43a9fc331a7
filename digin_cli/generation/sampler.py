"""Differentiable deterministic DDIM sampling (DiG-IN paper Eq. 1-2).

The sampler runs Stable Diffusion's DDIM chain (eta = 0) with classifier-free guidance, taking every step through
the diffusers scheduler's own ``step``, and keeps the whole chain differentiable with respect to its inputs: the
initial latent z_T, the per-step conditioning C_t and the per-step null-text embeddings ∅_t. With per-step gradient
checkpointing only each step's inputs are kept, so autograd memory stays flat in the number of steps T; the backward
pass recomputes one step at a time.

What is hand-written here and why: diffusers pipelines run under ``torch.no_grad`` and take one conditioning for all
steps, so the loop itself (per-step embeddings, checkpointing, keeping the last x0-predictions) is ours; the UNet,
the scheduler arithmetic and the VAE are the library's.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from diffusers import DDIMScheduler
from torch.utils.checkpoint import checkpoint

from digin_cli.errors import DiginError
from digin_cli.generation.models import StableDiffusion


@dataclass
class SamplerHooks:
    """Optional per-step extensions used by later tasks (prompt-to-prompt, mask blending).

    ``cross_attention_kwargs(i)`` is passed to the UNet's attention processors at step ``i``;
    ``before_step(i, z)`` may replace the latent entering step ``i`` (z_T for i = 0), before the UNet sees it: the
    authors' mask blend (DiG-IN ``sd_backprop_pipe.py``, ``step_function``) pins a region there;
    ``after_step(i, z)`` may replace the latent produced by step ``i``.
    All must be pure functions of their inputs: with checkpointing a step is run again during backward.
    """

    cross_attention_kwargs: Callable[[int], dict | None] | None = None
    before_step: Callable[[int, torch.Tensor], torch.Tensor] | None = None
    after_step: Callable[[int, torch.Tensor], torch.Tensor] | None = None


@dataclass
class SamplerOutput:
    latents: torch.Tensor
    """z_0, the sample the DDIM chain ends on (what a diffusers pipeline decodes)."""
    x0_predictions: list[torch.Tensor] = field(default_factory=list)
    """The x0-predictions (``pred_original_sample``) of the last ``keep_last`` steps, oldest first."""
    trajectory: list[torch.Tensor] | None = None
    """Detached z_T, z_{T-1}, ..., z_0 when asked for (inversion, mask blending)."""


def per_step(embedding: torch.Tensor, i: int) -> torch.Tensor:
    """Step ``i``'s embedding from either one ``(B,77,D)`` embedding for all steps or a ``(T,B,77,D)`` stack."""
    return embedding[i] if embedding.dim() == 4 else embedding


class DDIMSampler:
    """Deterministic DDIM with classifier-free guidance, differentiable end to end.

    Args:
        sd: the frozen Stable Diffusion components and sampling settings.
        checkpointing: recompute each denoising step during backward instead of storing its activations (the
            default of :meth:`sample` and :meth:`decode`; both take a per-call choice too).
        compile: run the UNet through ``torch.compile``: True for the default backend (inductor), or a backend's
            name (``"aot_eager"`` traces without code generation: the tests' check that the UNet, with the
            prompt-to-prompt processors installed, compiles to one graph per attention mode and not one per step).
    """

    scheduler_class = DDIMScheduler
    embeds_guidance = False
    """Whether this sampler can run a guidance-distilled LCM UNet (one with ``time_cond_proj_dim``)."""

    def __init__(self, sd: StableDiffusion, checkpointing: bool = True, compile: bool | str = False):
        if sd.distilled_lcm and not self.embeds_guidance:
            # Such a UNet takes w as an input and was distilled for few consistency steps: DDIM with CFG on top
            # would silently sample something neither the model nor its pipeline defines.
            raise DiginError("this generator is a distilled latent consistency model (its UNet has "
                             "time_cond_proj_dim), which the DDIM sampler cannot run — use generator.sampler=lcm")
        self.sd = sd
        self.checkpointing = checkpointing
        if compile:
            self.unet = torch.compile(sd.unet, **({"backend": compile} if isinstance(compile, str) else {}))
        else:
            self.unet = sd.unet
        # A private scheduler: DDIMScheduler.step reads the step count from the scheduler's state, so samplers with
        # different T sharing the pipeline's scheduler would silently corrupt each other.
        self.scheduler = self.scheduler_class.from_config(sd.scheduler.config)
        self.scheduler.set_timesteps(sd.num_steps, device=sd.device)
        self.timesteps = self.scheduler.timesteps

    @property
    def num_steps(self) -> int:
        return len(self.timesteps)

    @property
    def guided(self) -> bool:
        # The same rule as StableDiffusionPipeline: no unconditional branch at guidance <= 1.
        return self.sd.guidance_scale > 1.0

    def guidance_condition(self, batch: int) -> torch.Tensor | None:
        """The UNet's ``timestep_cond`` (the embedded guidance scale of a distilled LCM); None for other UNets."""
        return None

    def noise_prediction(self, z: torch.Tensor, i: int, cond: torch.Tensor, uncond: torch.Tensor | None,
                         hooks: SamplerHooks | None = None) -> torch.Tensor:
        """ε̃(z_t, t, C, ∅) = ε(z_t,∅) + w (ε(z_t,C) − ε(z_t,∅)); one batched UNet call, as the pipeline does."""
        t = self.timesteps[i]
        xa_kwargs = hooks.cross_attention_kwargs(i) if hooks and hooks.cross_attention_kwargs else None
        if self.guided:
            z_in = torch.cat([z, z])
            context = torch.cat([uncond.expand_as(cond), cond])
        else:
            z_in, context = z, cond
        z_in = self.scheduler.scale_model_input(z_in, t)
        eps = self.unet(z_in.to(self.sd.dtype), t, encoder_hidden_states=context.to(self.sd.dtype),
                        timestep_cond=self.guidance_condition(z_in.shape[0]), cross_attention_kwargs=xa_kwargs,
                        return_dict=False)[0].float()
        if not self.guided:
            return eps
        eps_uncond, eps_cond = eps.chunk(2)
        return eps_uncond + self.sd.guidance_scale * (eps_cond - eps_uncond)

    def seeded_start(self, seed: int) -> tuple[torch.Tensor, object | None]:
        """(z_T, noise) for ``seed``: z_T as a diffusers pipeline draws it; DDIM (eta = 0) draws no further noise."""
        return self.sd.initial_latent(seed), None

    def scheduler_step(self, eps: torch.Tensor, i: int, z: torch.Tensor, noise: object | None = None
                       ) -> tuple[torch.Tensor, torch.Tensor]:
        """The scheduler's own update z_t -> z_{t-1}; returns (z_{t-1}, x0-prediction). The only part samplers vary."""
        out = self.scheduler.step(eps, self.timesteps[i], z, eta=0.0, return_dict=True)
        return out.prev_sample, out.pred_original_sample

    def step(self, z: torch.Tensor, i: int, cond: torch.Tensor, uncond: torch.Tensor | None,
             hooks: SamplerHooks | None = None, noise: object | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """One step z_t -> z_{t-1} (DDIM: Eq. 1) through the scheduler's ``step``; returns (z_{t-1}, x0-prediction)."""
        if hooks and hooks.before_step:
            z = hooks.before_step(i, z)
        eps = self.noise_prediction(z, i, cond, uncond, hooks)
        z_prev, x0 = self.scheduler_step(eps, i, z, noise)
        if hooks and hooks.after_step:
            z_prev = hooks.after_step(i, z_prev)
        return z_prev, x0

    def sample(self, z_T: torch.Tensor, cond: torch.Tensor, uncond: torch.Tensor | None = None, *,
               keep_last: int = 0, keep_trajectory: bool = False, hooks: SamplerHooks | None = None,
               start: int = 0, checkpoint_step: Callable[[int], bool] | None = None,
               noise: object | None = None) -> SamplerOutput:
        """Run the chain from ``z_T`` (or from step ``start``'s latent) to z_0.

        ``cond`` / ``uncond`` are ``(B,77,D)`` for all steps or ``(T,B,77,D)`` per step; ``uncond`` may be None at
        guidance <= 1. Gradients flow to every input that requires them. ``checkpoint_step(i)`` says whether step
        i is checkpointed under grad (default: ``self.checkpointing`` for every step). ``noise`` is what
        ``seeded_start`` returned beside z_T (stochastic samplers only).
        """
        if self.guided and uncond is None:
            raise ValueError("guidance > 1 needs an unconditional (null-text) embedding")
        grad = torch.is_grad_enabled()
        if checkpoint_step is None:
            checkpoint_step = lambda i: self.checkpointing  # noqa: E731
        z = z_T
        x0s: list[torch.Tensor] = []
        trajectory = [z.detach()] if keep_trajectory else None
        for i in range(start, self.num_steps):
            c_i = per_step(cond, i)
            u_i = per_step(uncond, i) if uncond is not None else None
            if grad and checkpoint_step(i):
                z, x0 = checkpoint(self.step, z, i, c_i, u_i, hooks, noise, use_reentrant=False)
            else:
                z, x0 = self.step(z, i, c_i, u_i, hooks, noise)
            if i >= self.num_steps - keep_last:
                x0s.append(x0)
            if trajectory is not None:
                trajectory.append(z.detach())
        return SamplerOutput(latents=z, x0_predictions=x0s, trajectory=trajectory)

    def decode(self, latents: torch.Tensor, checkpointing: bool | None = None) -> torch.Tensor:
        """VAE decode to [0,1]; checkpointed under grad (by default when ``self.checkpointing``): the decoder's
        activations then exist only while its backward runs."""
        checkpointing = self.checkpointing if checkpointing is None else checkpointing
        if checkpointing and torch.is_grad_enabled() and latents.requires_grad:
            return checkpoint(self.sd.decode, latents, use_reentrant=False)
        return self.sd.decode(latents)
