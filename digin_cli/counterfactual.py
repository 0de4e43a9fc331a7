"""Edit a real image with DiG-IN: the machinery behind universal VCEs (paper Sec. 5) and neuron counterfactuals.

:meth:`RealImageEditor.prepare` inverts the image (null-text inversion, cached), reconstructs it once while storing
the cross-attention maps of the source prompt, and turns the maps of the object's words into foreground masks.
:meth:`RealImageEditor.edit` then swaps the prompt's object words, searches the prompt-to-prompt injection window
and background blend by a no-grad pass per candidate (the authors' candidates: injection during the first
30/40/50 % of the steps, blend none or first 30 %), and optimises z_T and the per-step deltas from the winner.
"""

from __future__ import annotations

import itertools
import math
import re
from dataclasses import dataclass

import torch

from digin_cli.generation.attention import AttentionController, attention_control, attention_maps, mask_map_size
from digin_cli.generation.inversion import Inversion, InversionCache, invert
from digin_cli.generation.models import StableDiffusion
from digin_cli.generation.sampler import DDIMSampler, SamplerHooks
from digin_cli.generation.token_alignment import token_alignment, word_token_indices
from digin_cli.optimize import DiginOptimizer, LossFunction, OptimResult, OptimSettings, Progress
from digin_cli.segmentation.base import Segmenter


@dataclass
class PreparedImage:
    """A real image made editable: its inversion, reconstruction, source attention and foreground masks."""

    inversion: Inversion
    source_prompt: str
    source_words: str
    reconstruction: torch.Tensor
    trajectory: list[torch.Tensor]
    controller: AttentionController
    attention: torch.Tensor
    px_mask: torch.Tensor
    latent_mask: torch.Tensor
    attention_info: dict
    """Which cross-attention maps made the mask: ``map_size`` (height) used, ``wanted_size`` (latent side / 4, the
    authors'), ``fallback`` when the UNet has no layer of the wanted size (tiny models)."""


@dataclass
class Schedule:
    """A prompt-to-prompt set-up: inject source attention for steps i/T < ``inject``, blend the kept region (see
    :meth:`RealImageEditor.hooks`) for steps i/T < ``blend``."""

    inject: float
    blend: float
    loss: float = math.nan

    def as_dict(self) -> dict:
        return {"inject_until": self.inject, "blend_until": self.blend, "search_loss": self.loss}


def replace_words(prompt: str, source_words: str, target_words: str) -> str:
    """The prompt with every whole-word occurrence of ``source_words`` replaced (case-insensitive), as the authors'
    ``prompt.replace(start_label, target_label)``: a caption naming the class twice must not keep it once."""
    pattern = re.compile(rf"(?<!\w){re.escape(source_words)}(?!\w)", re.IGNORECASE)
    if not pattern.search(prompt):
        raise ValueError(f"'{source_words}' does not occur in the prompt '{prompt}'")
    return pattern.sub(target_words, prompt)


def pin_region(pinned: torch.Tensor, trajectory: list[torch.Tensor], until: float, num_steps: int):
    """A ``before_step`` hook pinning ``pinned`` (1 = kept) to a reference trajectory z_T, ..., z_0, the authors'
    mask blend timing (DiG-IN ``sd_backprop_pipe.py``, ``step_function``): the latent *entering* step i is blended
    with the reference's latent entering step i, for i < ``until`` · T, z_T included. None when ``until`` is 0.
    Early steps fix the layout: pinning the region there keeps it intact while the rest is free to change."""
    if until <= 0:
        return None

    def blend(i: int, z: torch.Tensor) -> torch.Tensor:
        if i < until * num_steps:
            return pinned * trajectory[i] + (1 - pinned) * z
        return z

    return blend


class RealImageEditor:
    """Prepare and edit real images with one generator, sampler and segmenter.

    Args:
        sd, sampler: the generator and its differentiable sampler (with the run's steps and guidance).
        segmenter: turns the object's attention map into masks (loaded once per run by the caller).
        cache: where inversions are kept across runs and sweep jobs.
        sd_key: identifies the generator weights in cache keys.
        inner_steps, early_stop: null-text inversion settings (authors: 10, 1e-5).
        mask_steps: fraction of the first steps whose attention maps make the mask (authors: first half).
        max_injection: the longest injection window :meth:`edit` will be asked for (authors: first 50 % of the
            steps); only the steps inside it and the mask steps have their attention maps stored.
    """

    def __init__(self, sd: StableDiffusion, sampler: DDIMSampler, segmenter: Segmenter, cache: InversionCache,
                 sd_key: str, inner_steps: int = 10, early_stop: float = 1e-5, mask_steps: float = 0.5,
                 max_injection: float = 0.5, progress: Progress | None = None):
        self.sd, self.sampler, self.segmenter, self.cache = sd, sampler, segmenter, cache
        self.progress = progress  # the optimisation's progress bar (DiginOptimizer's ``progress``)
        self.sd_key, self.inner_steps, self.early_stop, self.mask_steps = sd_key, inner_steps, early_stop, mask_steps
        self.max_injection = float(max_injection)

    def stored_steps(self) -> list[int]:
        """Steps whose source attention is kept: the largest injection window ``i/T < max_injection`` plus the mask
        steps; the maps stay on the run's device."""
        T = self.sampler.num_steps
        mask = range(max(1, math.ceil(T * self.mask_steps)))
        return sorted({i for i in range(T) if i / T < self.max_injection} | set(mask))

    def prepare(self, image: torch.Tensor, caption: str, object_words: str) -> PreparedImage:
        sd, sampler = self.sd, self.sampler
        key = InversionCache.key(image, sd_key=self.sd_key, num_steps=sampler.num_steps, guidance=sd.guidance_scale,
                                 caption=caption, dtype=sd.dtype, scheduler=sampler.scheduler.config,
                                 inner_steps=self.inner_steps, early_stop=self.early_stop)
        inversion = self.cache.get_or_invert(
            key, lambda: invert(sd, sampler, image.to(sd.device), caption, self.inner_steps, self.early_stop),
            device=sd.device)
        # Maps are stored per head: injecting averaged maps changes the image even for an unchanged prompt.
        controller = AttentionController.for_sampler(sampler, mode="store", store_steps=self.stored_steps())
        with attention_control(sd.unet, controller), torch.no_grad():
            out = sampler.sample(inversion.z_T, inversion.cond, inversion.uncond, keep_trajectory=True,
                                 hooks=SamplerHooks(cross_attention_kwargs=controller.cross_attention_kwargs))
            reconstruction = sampler.decode(out.latents)
        tokens = word_token_indices(sd.tokenizer, caption, object_words)
        steps = range(max(1, math.ceil(sampler.num_steps * self.mask_steps)))
        side, wanted = mask_map_size(controller, steps)
        attention = attention_maps(controller, tokens, steps, resolution=sd.resolution, sizes={side})
        attention_info = {"map_size": side, "wanted_size": wanted, "fallback": side != wanted}
        latent_hw = tuple(inversion.z_T.shape[-2:])
        px_mask, latent_mask = self.segmenter.segment(inversion.original, attention, latent_hw)
        controller.mode = "off"
        return PreparedImage(inversion, caption, object_words, reconstruction, out.trajectory, controller,
                             attention, px_mask, latent_mask, attention_info)

    def hooks(self, prepared: PreparedImage, schedule: Schedule, keep: str = "background") -> SamplerHooks:
        """Sampler hooks for a schedule: attention injection and blending toward the reconstruction.

        ``keep`` is the region pinned by the blend: the background for UVCEs (the object changes), the object
        (foreground, the authors' foreground blend) for neuron counterfactuals, where the background changes.
        """
        if keep not in ("background", "foreground"):
            raise ValueError(f"keep must be 'background' or 'foreground', got {keep!r}")
        T, controller = self.sampler.num_steps, prepared.controller
        pinned = 1 - prepared.latent_mask if keep == "background" else prepared.latent_mask

        return SamplerHooks(cross_attention_kwargs=controller.cross_attention_kwargs,
                            before_step=pin_region(pinned, prepared.trajectory, schedule.blend, T))

    def edit(self, prepared: PreparedImage, target_words: str | None, objective: LossFunction,
             settings: OptimSettings, injections=(0.3, 0.4, 0.5), blends=(0.0, 0.3), description: str = "editing",
             keep: str = "background") -> tuple[OptimResult, Schedule, str]:
        """Swap the object words for ``target_words``, pick the best schedule, optimise; returns the result.

        ``target_words=None`` keeps the prompt (neuron counterfactuals): the injection then maps every token to
        itself and acts only as a structure regulariser. ``keep`` is the region the blend pins (see :meth:`hooks`).
        """
        sd, sampler, controller = self.sd, self.sampler, prepared.controller
        if target_words is None:
            target_words = prepared.source_words
        target_prompt = replace_words(prepared.source_prompt, prepared.source_words, target_words)
        if max(injections) > self.max_injection:
            raise ValueError(f"injection window {max(injections)} exceeds the stored steps (max_injection="
                             f"{self.max_injection}): build the editor with the largest window it will search")
        controller.token_map = token_alignment(sd.tokenizer, prepared.source_prompt, target_prompt,
                                               prepared.source_words, target_words,
                                               embed=sd.encode_prompt).to(sd.device)
        cond = sd.encode_prompt(target_prompt)
        uncond = prepared.inversion.uncond
        if not self.segmenter_active:
            blends = tuple(b for b in blends if b == 0) or (0.0,)  # no mask: blending would pin the whole image
        controller.mode = "inject"
        try:
            with attention_control(sd.unet, controller):
                best = None
                candidates = list(itertools.product(injections, blends))
                for inject, blend in candidates:
                    schedule = Schedule(inject, blend)
                    if len(candidates) == 1:  # nothing to choose: no search pass
                        best = schedule
                        break
                    controller.window = (0.0, inject)
                    with torch.no_grad():
                        latents = sampler.sample(prepared.inversion.z_T, cond, uncond,
                                                 hooks=self.hooks(prepared, schedule, keep)).latents
                        loss, _ = objective(sampler.decode(latents), False, latents)
                    schedule.loss = float(loss)
                    if best is None or schedule.loss < best.loss:
                        best = schedule
                controller.window = (0.0, best.inject)
                # Backward recomputes checkpointed steps, so it must run while the processors are installed.
                result = DiginOptimizer(sampler, settings, self.hooks(prepared, best, keep), progress=self.progress).run(
                    prepared.inversion.z_T, cond, uncond, objective, description)
        finally:
            controller.mode = "off"
        return result, best, target_prompt

    @property
    def segmenter_active(self) -> bool:
        return getattr(self.segmenter, "active", True)


@dataclass
class GeneratedObject:
    """The object of a generated image: its sample, trajectory and masks (``task=neuron``'s ``keep_object``)."""

    image: torch.Tensor
    trajectory: list[torch.Tensor]
    px_mask: torch.Tensor
    latent_mask: torch.Tensor


def generated_object(sd: StableDiffusion, sampler: DDIMSampler, segmenter: Segmenter, z_T: torch.Tensor,
                     prompt: str, uncond: torch.Tensor | None, words: str, mask_steps: float = 0.5) -> GeneratedObject:
    """Sample ``prompt`` from ``z_T`` once, storing the cross-attention of the first ``mask_steps`` of the steps, and
    segment the object named by ``words`` as :meth:`RealImageEditor.prepare` does for a real image. The authors'
    Salient ImageNet neuron script pins this foreground of the first SD sample (``imagenet_neuron_activation.py``,
    foreground mask blend ``threshold_0.3``) so that the neuron changes the context, not the object."""
    steps = list(range(max(1, math.ceil(sampler.num_steps * mask_steps))))
    controller = AttentionController.for_sampler(sampler, mode="store", store_steps=steps)
    cond = sd.encode_prompt(prompt)
    with attention_control(sd.unet, controller), torch.no_grad():
        out = sampler.sample(z_T, cond, uncond, keep_trajectory=True,
                             hooks=SamplerHooks(cross_attention_kwargs=controller.cross_attention_kwargs))
        image = sampler.decode(out.latents)
    side, _ = mask_map_size(controller, steps)
    attention = attention_maps(controller, word_token_indices(sd.tokenizer, prompt, words), steps,
                               resolution=sd.resolution, sizes={side})
    px_mask, latent_mask = segmenter.segment(image, attention, tuple(z_T.shape[-2:]))
    return GeneratedObject(image, out.trajectory, px_mask, latent_mask)
