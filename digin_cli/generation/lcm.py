"""Differentiable latent-consistency sampling (LCM / LCM-LoRA), the few-step sampler of DiffExplainer Sec. 3.2.

The loop (per-step embeddings, classifier-free guidance only at guidance > 1, per-step checkpointing, ``keep_last``,
hooks, decode) is :class:`~digin_cli.generation.sampler.DDIMSampler`'s; only the scheduler update differs: every
step goes through diffusers' ``LCMScheduler.step`` and its x0-prediction is the scheduler's ``denoised``.

Two kinds of model run through it, guided differently:

- an SD model with a fused LCM-LoRA (DiffExplainer's): classifier-free guidance as StableDiffusionPipeline applies
  it, i.e. none at ``guidance_scale`` 1, the LoRA's intended setting;
- a guidance-distilled LCM (e.g. ``SimianLuo/LCM_Dreamshaper_v7``; its UNet has ``time_cond_proj_dim``): no CFG
  batch; the guidance scale enters the UNet as ``timestep_cond``, the embedding of w = ``guidance_scale`` − 1
  (Luo et al. 2023, Sec. 4.2), exactly as diffusers' ``LatentConsistencyModelPipeline`` does.

Two things DDIM does not have, handled here:

1. LCM injects fresh Gaussian noise after every step but the last. A diffusers pipeline draws it from the same CPU
   generator as z_T, right after z_T. ``seeded_start`` draws z_T the same way and records the generator's state
   before each later draw; step ``i`` then runs with a generator restored to state ``i``. A step that gradient
   checkpointing recomputes in backward therefore draws exactly the noise it drew forward, and the whole chain is a
   deterministic function of (z_T, prompts, seed).
2. ``LCMScheduler.step`` advances a private step counter; it is set to ``i`` before each call, so steps can run in
   any order and twice (checkpoint recomputation).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from diffusers import LCMScheduler
from diffusers.utils.torch_utils import randn_tensor

from digin_cli.generation.sampler import DDIMSampler


@dataclass(frozen=True)
class NoiseStates:
    """CPU-generator states before each inter-step noise draw of one seeded LCM chain (``T - 1`` of them)."""

    states: tuple[torch.Tensor, ...]

    def generator(self, i: int) -> torch.Generator:
        """A fresh CPU generator at the state step ``i`` draws its noise from."""
        generator = torch.Generator("cpu")
        generator.set_state(self.states[i])
        return generator


class LCMSampler(DDIMSampler):
    """Latent-consistency sampling with a private ``LCMScheduler``, differentiable end to end.

    Args:
        sd: the frozen Stable Diffusion components (a distilled LCM, or SD with a fused LCM-LoRA) and sampling
            settings.
        checkpointing: recompute each denoising step during backward instead of storing its activations.
    """

    scheduler_class = LCMScheduler
    embeds_guidance = True

    @property
    def guided(self) -> bool:
        # A distilled LCM has its guidance distilled in: LatentConsistencyModelPipeline never batches an
        # unconditional branch, whatever the scale.
        return not self.sd.distilled_lcm and super().guided

    def guidance_condition(self, batch: int) -> torch.Tensor | None:
        """LatentConsistencyModelPipeline's ``w_embedding``: the sinusoidal embedding of w = guidance_scale − 1 (the
        Imagen CFG convention of diffusers), one row per image; recomputed per call (it is a few hundred numbers)."""
        if not self.sd.distilled_lcm:
            return None
        w = torch.tensor(self.sd.guidance_scale - 1.0).repeat(batch)
        embedding = self.sd.pipe.get_guidance_scale_embedding(w, embedding_dim=self.sd.unet.config.time_cond_proj_dim)
        return embedding.to(device=self.sd.device, dtype=self.sd.dtype)

    def seeded_start(self, seed: int) -> tuple[torch.Tensor, NoiseStates]:
        """(z_T, noise states) for ``seed``, drawn in the order a diffusers pipeline draws them from one generator."""
        generator = torch.Generator("cpu").manual_seed(int(seed))
        shape = self.sd.latent_shape
        z = randn_tensor(shape, generator=generator, device=torch.device("cpu"), dtype=torch.float32)
        states = []
        for _ in range(self.num_steps - 1):
            states.append(generator.get_state())
            # Advance exactly as LCMScheduler.step's draw will (same shape and dtype, on the CPU generator).
            randn_tensor(shape, generator=generator, device=torch.device("cpu"), dtype=torch.float32)
        return (z * self.scheduler.init_noise_sigma).to(self.sd.device), NoiseStates(tuple(states))

    def scheduler_step(self, eps: torch.Tensor, i: int, z: torch.Tensor, noise: NoiseStates | None = None
                       ) -> tuple[torch.Tensor, torch.Tensor]:
        """LCM's consistency update through ``LCMScheduler.step``; returns (z_{t-1}, denoised x0)."""
        last = i == self.num_steps - 1
        if noise is None and not last:
            raise ValueError("LCM sampling draws fresh noise between steps: pass noise= from seeded_start(seed)")
        # The scheduler keeps a private step counter that only ever increments; pin it to this step.
        self.scheduler._step_index = i
        generator = None if last else noise.generator(i)
        out = self.scheduler.step(eps, self.timesteps[i], z, generator=generator, return_dict=True)
        return out.prev_sample, out.denoised
