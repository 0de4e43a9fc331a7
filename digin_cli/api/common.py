"""What every method class shares: its sampler and its per-call random source of cutouts."""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager

import torch

from digin_cli.augment import Cutouts
from digin_cli.errors import DiginError
from digin_cli.generation.lcm import LCMSampler
from digin_cli.generation.models import StableDiffusion
from digin_cli.generation.sampler import DDIMSampler
from digin_cli.optimize import OptimSettings


def default_sampler(gen: StableDiffusion, settings: OptimSettings, compile: bool | str = False) -> DDIMSampler:
    """The sampler ``gen`` was loaded with (``sampler=`` of :func:`digin_cli.api.load_generator`; DDIM otherwise),
    checkpointed per step unless ``settings.checkpointing`` is False (as the CLI's ``optimizer.checkpointing``)."""
    cls = LCMSampler if getattr(gen, "sampler_name", "ddim") == "lcm" else DDIMSampler
    with argument_names({"generator.sampler": "sampler"}):  # the tasks hand their own sampler: never reached by a run
        return cls(gen, checkpointing=settings.checkpointing is not False, compile=compile)


def cutouts_for(template: Cutouts, rng: torch.Generator | None, seed: int, device: torch.device) -> Cutouts:
    """``template``'s cutouts drawn from ``rng``; without one, from a generator seeded with ``seed`` on ``device``
    (the CLI hands its per-item generator, reseeded from (run seed, item path))."""
    if rng is None:
        rng = torch.Generator(device=device).manual_seed(int(seed))
    return Cutouts(template.num, template.power, template.noise_sd, generator=rng)


@contextmanager
def argument_names(keys: Mapping[str, str] | None = None, group: str | None = None) -> Iterator[None]:
    """A DiginError of a check shared with the CLI names its keys (``task.delta=0.1``, ``classifier.pretrained=``);
    raised inside, it names the API's keywords instead: ``keys`` maps whole keys to them (``task.delta`` ->
    ``delta``), ``group`` drops that group's prefix from each of its keys (a builder's keywords are the group's keys).
    Only around checks the CLI makes up front with its own keys, so a run never meets the translated line."""
    try:
        yield
    except DiginError as err:
        text = str(err)
        if group:
            text = re.sub(rf"(?<![\w.]){re.escape(group)}\.(?=\w)", "", text)
        for key, name in (keys or {}).items():  # whole keys only: task.tau is not the start of task.tau_end
            text = re.sub(rf"(?<![\w.]){re.escape(key)}(?!\w)", name, text)
        raise DiginError(text) from None
