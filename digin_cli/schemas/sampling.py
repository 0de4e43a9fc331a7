"""Schemas of the ``optimizer`` and ``generator`` groups: the optimisation loop's settings and the SD 1.x pipeline
(conf/optimizer/adam.yaml and conf/generator/sd15.yaml hold the authors' values and say what each key does)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from digin_cli.schemas.fields import ranged


@dataclass
class AugmentSchema:
    """Random cutouts for the classifier loss (DiG-IN Sec. 3: the authors' 16 views)."""

    num: int = ranged(16, 0)
    power: float = ranged(0.3, 0, above=True)
    noise_sd: float = ranged(0.005, 0)
    chunk: int = ranged(4, 1)


@dataclass
class OptimizerSchema:
    """The ``optimizer`` group."""

    steps: int = ranged(20, 0)
    lr: float = ranged(0.01, 0, above=True)
    latent_lr_factor: float = ranged(0.1, 0)
    cond_lr_factor: float = ranged(1.0, 0)
    uncond_lr_factor: float = ranged(1.0, 0)
    optimize_latent: bool = True
    optimize_cond: bool = True
    optimize_uncond: bool = True
    per_step_deltas: bool = True
    loss_steps: int = ranged(3, 1)
    grad_clip: Optional[float] = ranged(None, 0, above=True, example=1.0)
    checkpointing: Any = ranged(True, choices=(True, False, "auto"), example="auto")  # bool | "auto"
    memory_budget_gb: Optional[float] = ranged(None, 0, example=40)
    two_stage: bool = True
    compile: Any = False  # bool | a torch.compile backend: configs.check_config asks torch._dynamo which exist
    fresh_latent: bool = False
    select: str = ranged("best", choices=("best", "last"))
    keep_images_every: int = ranged(1, 1)
    augment: AugmentSchema = field(default_factory=AugmentSchema)
    optimizer: Any = field(default_factory=lambda: {"_target_": "torch.optim.Adam", "_partial_": True})


@dataclass
class GeneratorSchema:
    """The ``generator`` group: a Stable Diffusion 1.x pipeline and its sampler."""

    name: str = "sd15"
    source: str = ranged("pretrained", choices=("pretrained", "tiny", "random_sd15"))
    pretrained: Optional[str] = None
    seed: int = 0  # the random generators' weights (tiny, sd15_random); pretrained ones ignore it
    num_steps: int = ranged(20, 0, above=True)
    guidance_scale: float = ranged(3.0, 1.0)
    sampler: str = ranged("ddim", choices=("ddim", "lcm"))
    lora: Optional[str] = None
    resolution: int = ranged(512, 0, above=True)
