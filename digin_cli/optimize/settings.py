"""The loop's settings: what the ``optimizer`` config group holds, with the authors' defaults."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf


@dataclass
class OptimSettings:
    """What the ``optimizer`` config group holds (authors' defaults). Ranges and choices are stated and checked once, on
    the group's schema (:class:`digin_cli.schemas.sampling.OptimizerSchema`, checked by ``check_config``)."""

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
    checkpointing: bool | str = True
    """True / False / "auto" (:mod:`digin_cli.optimize.memory`): the loop alone decides what the sampler and the
    decode checkpoint while optimising, whatever the sampler was built with."""
    memory_budget_gb: float | None = None
    """With checkpointing "auto": memory for un-checkpointed steps' activations, then the decode's (None: CUDA 85 %
    free, CPU 0)."""
    two_stage: bool = True
    """Backward split at the images with chunked cutouts (False: one ``backward()`` of the whole loss)."""
    chunk: int = 4
    """Cutouts per classifier forward / backward in the two-stage backward."""
    fresh_latent: bool = False
    """Prompt variables: a new z_T (and LCM noise) per iterate from the seed stream (seed, iterate)."""
    select: str = "best"
    """``best`` (lowest plain loss, DiG-IN) or ``last`` (the final iterate: the paper's t* with a new z per step)."""
    keep_images_every: int = 1
    """Keep every n-th iterate's image on CPU (the first, last and selected are always kept)."""


def optim_settings(opt: DictConfig) -> OptimSettings:
    """The loop's settings from an ``optimizer`` config node (the torch optimizer instantiated as a partial); the run
    context and the API's ``optimizer_settings`` both read the group through it."""
    fields = {k: v for k, v in OmegaConf.to_container(opt, resolve=True).items()
              if k in OptimSettings.__dataclass_fields__ and k not in ("optimizer", "chunk")}
    return OptimSettings(**fields, chunk=int(opt.augment.get("chunk", 4)), optimizer=instantiate(opt.optimizer))
