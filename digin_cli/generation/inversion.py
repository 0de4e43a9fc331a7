"""Real-image inversion for counterfactuals (DiG-IN paper Sec. 5): DDIM inversion, then null-text inversion.

A UVCE starts from a latent z_T, a caption embedding C and per-step null-text embeddings (∅_t) that reproduce the
real image x̂ under the run's DDIM sampler with classifier-free guidance:

1. encode x̂ with the VAE (posterior mean) to z_0;
2. DDIM inversion (:func:`ddim_inversion`): run the deterministic DDIM chain backwards, z_0 -> z_T, with the
   conditional-only noise prediction (guidance 1). Sampling back from z_T at guidance 1 nearly returns z_0, but at
   the run's guidance w > 1 the trajectory drifts;
3. null-text inversion (:func:`null_text_inversion`, Mokady et al. 2023): keep z_T and C fixed and optimise one
   null-text embedding per step so that each guided DDIM step lands on the DDIM-inversion latent of the next step.

The settings follow the official code the DiG-IN authors run (Prompt-to-Prompt's ``NullInversion``): Adam with
lr 1e-2·(1 - i/100), up to 10 inner steps, early stop at 1e-5 + i·2e-5, warm start from the previous step's null.
Inversion is slow (an inner optimisation at every DDIM step), so :class:`InversionCache` keeps the results on disk,
keyed by everything that changes them, and writes each entry atomically so concurrent jobs never see half a file.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from diffusers import DDIMInverseScheduler

from digin_cli.errors import DiginError
from digin_cli.generation.models import StableDiffusion
from digin_cli.generation.sampler import DDIMSampler
from digin_cli.io.progress import track
from digin_cli.io.tensor_cache import TensorCache


# --------------------------------------------------------------------------------------------------------------------
# DDIM inversion


def inverse_scheduler(sampler: DDIMSampler) -> DDIMInverseScheduler:
    """diffusers' ``DDIMInverseScheduler`` for ``sampler``'s scheduler, checked to be its exact reverse.

    Raises :class:`DiginError` when the configs do not line up (e.g. ``timestep_spacing="linspace"``, which the
    inverse scheduler does not implement).
    """
    forward = sampler.scheduler
    try:
        inverse = DDIMInverseScheduler.from_config(forward.config)
        inverse.set_timesteps(sampler.num_steps)
    except ValueError as err:
        raise DiginError(f"DDIM inversion does not support this scheduler config ({err})") from None
    aligned = (
        torch.equal(inverse.timesteps.cpu(), sampler.timesteps.cpu().flip(0))
        and torch.equal(inverse.alphas_cumprod, forward.alphas_cumprod)
        and torch.equal(inverse.initial_alpha_cumprod, forward.final_alpha_cumprod)
        and inverse.config.prediction_type == forward.config.prediction_type
    )
    if not aligned:
        raise DiginError("DDIMInverseScheduler is not the exact reverse of the sampler's DDIMScheduler for this "
                         f"config (timestep_spacing={forward.config.get('timestep_spacing')!r}); DDIM inversion "
                         "needs a 'leading' or 'trailing' DDIM schedule")
    return inverse


def _eps(sampler: DDIMSampler, z: torch.Tensor, t: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
    """One UNet noise prediction ε(z, t, context), the single-branch half of ``DDIMSampler.noise_prediction``."""
    sd = sampler.sd
    z_in = sampler.scheduler.scale_model_input(z, t)
    return sd.unet(z_in.to(sd.dtype), t, encoder_hidden_states=context.to(sd.dtype), return_dict=False)[0].float()


@torch.no_grad()
def ddim_inversion(sampler: DDIMSampler, z0: torch.Tensor, cond: torch.Tensor) -> list[torch.Tensor]:
    """Invert the deterministic DDIM chain: z_0 -> z_T with the conditional-only prediction (guidance 1).

    Returns ``[z_0, z_1, ..., z_T]``: entry ``k`` is the latent at noise level ``sampler.timesteps[T-k]`` (z_0 at the
    clean level ``final_alpha_cumprod``), so ``sampler.step`` at index ``i`` maps entry ``T-i`` to about entry
    ``T-1-i``.

    Inverse step k (ᾱ = ``alphas_cumprod``), from the level of z_k to t = ``timesteps[T-1-k]``::

        ε      = ε_θ(z_k, t, C)                               # cleaner z_k at timestep t: the DDIM-inversion
                                                              # approximation ε(z_k) ≈ ε(z_k+1)
        x̂_0   = (z_k - sqrt(1 - ᾱ_prev) ε) / sqrt(ᾱ_prev)    # ᾱ_prev = ᾱ[t - 1000//T], final_alpha_cumprod if < 0
        z_k+1 = sqrt(ᾱ_t) x̂_0 + sqrt(1 - ᾱ_t) ε              # DDIM Eq. 12 with η = 0, run towards more noise

    This is exactly the forward DDIM update ``DDIMScheduler.step`` solved for its input, with ε held fixed, and it is
    what diffusers' ``DDIMInverseScheduler.step`` computes, so that class does the arithmetic here. It is used only
    after :func:`inverse_scheduler` checks that it is the exact reverse of the sampler's scheduler: built
    ``from_config`` of SD's DDIM config (``steps_offset=1, set_alpha_to_one=False``, "leading" spacing) its timesteps
    are the sampler's reversed (e.g. 1, 251, 501, 751 for T=4), its ``alphas_cumprod`` are the same and its first step
    starts from ``initial_alpha_cumprod = alphas_cumprod[0]``, the same value as the forward scheduler's
    ``final_alpha_cumprod``. (That flag was once spelled ``set_alpha_to_zero``, so a DDIM config did not carry over
    to it; the check catches such drift, as well as the "linspace" spacing the inverse class does not implement.)
    The test suite also checks the numbers against the formula above written out with ``alphas_cumprod``.
    """
    inverse = inverse_scheduler(sampler)
    z = z0.float()
    latents = [z]
    for t in inverse.timesteps:  # t ascending: timesteps[T-1], ..., timesteps[0]
        t = t.to(sampler.timesteps.device)
        eps = _eps(sampler, z, t, cond)
        z = inverse.step(eps, int(t), z, return_dict=True).prev_sample
        latents.append(z)
    return latents


# --------------------------------------------------------------------------------------------------------------------
# Null-text inversion


def null_text_inversion(sampler: DDIMSampler, inverted_latents: list[torch.Tensor], cond: torch.Tensor,
                        uncond_init: torch.Tensor, inner_steps: int = 10, early_stop: float = 1e-5,
                        lr: float = 1e-2) -> torch.Tensor:
    """Optimise one null-text embedding per DDIM step (Mokady et al.), returning ``(T, 1, 77, D)``.

    Step i (from z_T down): start from the previous step's optimised null, run up to ``inner_steps`` Adam
    iterations (lr ``lr·(1 - i/100)``) on ``mse(guided DDIM step(z_cur, i, C, ∅_i), inverted_latents[T-1-i])``,
    stopping once the loss is below ``early_stop + i·2e-5``; then advance z_cur with the full guided step and the
    optimised null. The guided step is ``DDIMSampler.step`` at the run's guidance, so sampling from
    ``inverted_latents[-1]`` with these per-step nulls follows exactly the trajectory optimised here. Inside the
    loss the two branches are run as separate UNet calls (the conditional one once per DDIM step, without grad, as
    the official code does), which equals the batched call of ``DDIMSampler.step`` up to float rounding.

    At guidance <= 1 the unconditional branch is never evaluated: the plain null is returned for every step.
    """
    T = sampler.num_steps
    if len(inverted_latents) != T + 1:
        raise ValueError(f"expected {T + 1} inverted latents [z_0, ..., z_T], got {len(inverted_latents)}")
    uncond = uncond_init.detach().float()
    if not sampler.guided:
        return uncond.unsqueeze(0).repeat(T, *([1] * uncond.dim()))
    cond = cond.detach().float()
    w = sampler.sd.guidance_scale
    z_cur = inverted_latents[-1].detach().float()
    nulls = []
    for i in track(range(T), "null-text inversion"):
        t = sampler.timesteps[i]
        target = inverted_latents[T - 1 - i].detach().float()
        uncond = uncond.detach().clone().requires_grad_(True)
        # lr decays with the step index as in the official code; floored so that T > 100 stays a valid Adam lr.
        optimizer = torch.optim.Adam([uncond], lr=lr * max(1.0 - i / 100.0, 0.01))
        with torch.no_grad():
            eps_cond = _eps(sampler, z_cur, t, cond)  # independent of ∅: computed once per step
        with torch.enable_grad():
            for _ in range(inner_steps):
                eps_uncond = _eps(sampler, z_cur, t, uncond)
                eps = eps_uncond + w * (eps_cond - eps_uncond)
                z_prev = sampler.scheduler.step(eps, t, z_cur, eta=0.0, return_dict=True).prev_sample
                loss = F.mse_loss(z_prev, target)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                if loss.item() < early_stop + i * 2e-5:
                    break
        uncond = uncond.detach()
        nulls.append(uncond)
        with torch.no_grad():
            z_cur, _ = sampler.step(z_cur, i, cond, uncond)
    return torch.stack(nulls)


# --------------------------------------------------------------------------------------------------------------------
# The whole inversion of one image


@dataclass
class Inversion:
    """Everything a counterfactual run needs to reproduce one real image with the DDIM sampler."""

    z_T: torch.Tensor
    """(1, 4, h, w): the DDIM-inverted initial latent."""
    uncond: torch.Tensor
    """(T, 1, 77, D): the per-step null-text embeddings ∅_t."""
    cond: torch.Tensor
    """(1, 77, D): the caption embedding Ĉ."""
    caption: str
    original: torch.Tensor
    """(1, 3, H, W) in [0, 1]: the (preprocessed) real image x̂."""
    latent_original: torch.Tensor
    """(1, 4, h, w): E(x̂), the VAE posterior mean (scaled), the z_0 the inversion starts from."""
    reconstruction_error: float
    """MSE in [0, 1] pixel space between D(sample(z_T, Ĉ, ∅)) and x̂ (includes the VAE's own error)."""

    TENSORS = ("z_T", "uncond", "cond", "original", "latent_original")

    def to(self, device: torch.device | str) -> Inversion:
        moved = {name: getattr(self, name).to(device) for name in self.TENSORS}
        return Inversion(**moved, caption=self.caption, reconstruction_error=self.reconstruction_error)


def invert(sd: StableDiffusion, sampler: DDIMSampler, image: torch.Tensor, caption: str, inner_steps: int = 10,
           early_stop: float = 1e-5) -> Inversion:
    """Invert a real ``image`` ``(1,3,H,W)`` in [0, 1] (already resized to the run's resolution) under ``caption``.

    VAE encode (posterior mean) -> DDIM inversion with the caption (guidance 1) -> null-text inversion at the run's
    guidance; then one sampling pass to measure the reconstruction error.
    """
    if image.dim() == 3:
        image = image.unsqueeze(0)
    if image.dim() != 4 or image.shape[:2] != (1, 3):
        raise DiginError(f"inversion expects one RGB image (1,3,H,W), got shape {tuple(image.shape)}")
    if tuple(image.shape[-2:]) != (sd.resolution, sd.resolution):
        raise DiginError(f"image is {image.shape[-1]}x{image.shape[-2]} but the generator runs at "
                         f"{sd.resolution}x{sd.resolution} — resize/crop it to generator.resolution first")
    original = image.detach().float().clamp(0, 1).to(sd.device)
    with torch.no_grad():
        latent_original = sd.encode(original)
        cond = sd.encode_prompt(caption)
        uncond_init = sd.null_embedding()
    latents = ddim_inversion(sampler, latent_original, cond)
    uncond = null_text_inversion(sampler, latents, cond, uncond_init, inner_steps=inner_steps, early_stop=early_stop)
    z_T = latents[-1]
    with torch.no_grad():
        reconstruction = sampler.decode(sampler.sample(z_T, cond, uncond).latents)
        error = F.mse_loss(reconstruction, original).item()
    return Inversion(z_T=z_T.detach(), uncond=uncond.detach(), cond=cond.detach(), caption=caption,
                     original=original, latent_original=latent_original.detach(), reconstruction_error=error)


# --------------------------------------------------------------------------------------------------------------------
# On-disk cache

_FORMAT = "digin-inversion-v1"


class InversionCache(TensorCache):
    """Inversions on disk, one ``<key>.safetensors`` file per entry under ``root`` (tensors + caption / error in its
    metadata): atomic entries, and :meth:`get_or_invert` inverts each key once across processes
    (:class:`TensorCache`)."""

    format = _FORMAT
    what = "inversion cache"

    @staticmethod
    def key(image: torch.Tensor, *, sd_key: str, num_steps: int, guidance: float, caption: str,
            dtype: torch.dtype | str, scheduler: Mapping, inner_steps: int = 10, early_stop: float = 1e-5) -> str:
        """sha256 of the preprocessed image tensor (float32 bytes + shape) and every setting that changes the result.

        ``sd_key`` names the generator, e.g. ``f"{cfg.pretrained or cfg.source}:{cfg.seed}"``; ``dtype`` is the
        generator's precision (a bf16 inversion is not an fp32 one) and ``scheduler`` its scheduler's config
        (``sampler.scheduler.config``: betas, spacing, offset and prediction type all move the DDIM chain).
        """
        pixels = image.detach().float().cpu().contiguous()
        settings = {"format": _FORMAT, "shape": list(pixels.shape), "sd": str(sd_key), "num_steps": int(num_steps),
                    "guidance": float(guidance), "caption": str(caption), "inner_steps": int(inner_steps),
                    "early_stop": float(early_stop), "dtype": str(dtype).removeprefix("torch."),
                    "scheduler": {k: v for k, v in dict(scheduler).items() if not str(k).startswith("_")}}
        digest = hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode("utf-8"))
        digest.update(pixels.numpy().tobytes())
        return digest.hexdigest()

    def get(self, key: str, device: torch.device | str = "cpu") -> Inversion | None:
        """The cached inversion for ``key`` (tensors on ``device``), or None when there is none."""
        entry = self.read(key, Inversion.TENSORS)
        if entry is None:
            return None
        tensors, meta = entry
        try:
            inv = Inversion(**tensors, caption=meta["caption"], reconstruction_error=float(meta["reconstruction_error"]))
        except (KeyError, ValueError) as err:
            self.unreadable(key, err)
            return None
        return inv.to(device)

    def put(self, key: str, inv: Inversion) -> Path:
        """Write ``inv`` as the entry for ``key`` (atomically; replaces an existing entry)."""
        return self.write(key, {name: getattr(inv, name) for name in Inversion.TENSORS},
                          {"caption": inv.caption, "reconstruction_error": repr(float(inv.reconstruction_error))})

    def get_or_invert(self, key: str, compute: Callable[[], Inversion],
                      device: torch.device | str = "cpu") -> Inversion:
        """The cached entry for ``key``, or ``compute()``'s result, stored first; one computation per key."""
        return self.once(key, lambda: self.get(key, device), compute, lambda inv: self.put(key, inv)).to(device)
