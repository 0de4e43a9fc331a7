"""What every method class shares: its sampler and its per-call random source of cutouts."""

from __future__ import annotations

import torch

from digin_cli.augment import Cutouts
from digin_cli.generation.lcm import LCMSampler
from digin_cli.generation.models import StableDiffusion
from digin_cli.generation.sampler import DDIMSampler
from digin_cli.optimize import OptimSettings


def default_sampler(gen: StableDiffusion, settings: OptimSettings, compile: bool | str = False) -> DDIMSampler:
    """The sampler ``gen`` was loaded with (``sampler=`` of :func:`digin_cli.api.load_generator`; DDIM otherwise),
    checkpointed per step unless ``settings.checkpointing`` is False (as the CLI's ``optimizer.checkpointing``)."""
    cls = LCMSampler if getattr(gen, "sampler_name", "ddim") == "lcm" else DDIMSampler
    return cls(gen, checkpointing=settings.checkpointing is not False, compile=compile)


def cutouts_for(template: Cutouts, rng: torch.Generator | None, seed: int, device: torch.device) -> Cutouts:
    """``template``'s cutouts drawn from ``rng``; without one, from a generator seeded with ``seed`` on ``device``
    (the CLI hands its per-item generator, reseeded from (run seed, item path))."""
    if rng is None:
        rng = torch.Generator(device=device).manual_seed(int(seed))
    return Cutouts(template.num, template.power, template.noise_sd, generator=rng)
