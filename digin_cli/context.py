"""What a task is handed: the config, the job's output folder, device, writer, tracker, and lazily built parts."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import torch
from omegaconf import DictConfig

from digin_cli.augment import Cutouts
from digin_cli.classifiers import Classifier, build_classifier
from digin_cli.generation.lcm import LCMSampler
from digin_cli.generation.models import StableDiffusion, load_generator
from digin_cli.generation.sampler import DDIMSampler
from digin_cli.io.tracking import Tracker
from digin_cli.io.writer import Writer
from digin_cli.optimize import OptimSettings
from digin_cli.optimize.settings import optim_settings


@dataclass
class RunContext:
    cfg: DictConfig
    output_dir: Path
    device: torch.device
    dtype: torch.dtype
    writer: Writer
    tracker: Tracker
    _classifiers: dict = field(default_factory=dict)
    rng: torch.Generator | None = None
    """The random source of cutouts, noise and any sampling, on the run's device; ``run_items`` reseeds it per item
    from (seed, item key)."""
    skipped: list = field(default_factory=list)
    """``(path, reason)`` of input images ``task.skip_unreadable`` left out; ``finish`` lists them in summary.csv."""

    def __post_init__(self):
        if self.rng is None:
            self.rng = torch.Generator(device=self.device).manual_seed(int(self.cfg.seed))

    @cached_property
    def generator(self) -> StableDiffusion:
        return load_generator(self.cfg.generator, self.device, self.dtype, cache_dir=str(self.cfg.paths.cache_dir))

    def classifier(self, key: str = "classifier") -> Classifier:
        """The classifier of config group ``key`` (``classifier`` or ``classifier2``), built once per job."""
        if key not in self._classifiers:
            self._classifiers[key] = build_classifier(self.cfg[key], self.device, key=key,
                                                      two_stage=self.cfg.optimizer.get("two_stage", True))
        return self._classifiers[key]

    def sampler(self) -> DDIMSampler:
        """The sampler named by ``generator.sampler``: ``ddim`` (DiG-IN) or ``lcm`` (DiffExplainer's LCM-LoRA).

        Its checkpointing is left at the default: ``optimizer.checkpointing`` reaches the loop, which alone decides
        what is recomputed (:mod:`digin_cli.optimize.memory`)."""
        cls = LCMSampler if self.cfg.generator.get("sampler", "ddim") == "lcm" else DDIMSampler
        return cls(self.generator, compile=self.cfg.optimizer.get("compile", False))

    def optim_settings(self) -> OptimSettings:
        return optim_settings(self.cfg.optimizer)

    def cutouts(self) -> Cutouts:
        return Cutouts(**{k: v for k, v in self.cfg.optimizer.augment.items() if k != "chunk"}, generator=self.rng)
