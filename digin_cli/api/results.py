"""Result objects of the method classes: images (tensors, PIL), metrics and iterates, in memory.

Nothing is written until ``result.save(folder)``, which writes exactly what the CLI writes for that item (the tasks
call the same ``save``, through their run's :class:`~digin_cli.io.writer.Writer`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from PIL import Image

from digin_cli.io.atomic import tensor_to_pil
from digin_cli.io.writer import Writer
from digin_cli.optimize import Iterate, OptimResult


@dataclass
class OptimisationResult:
    """One optimised item (DiG-IN's loop or DiffExplainer's): the start, the selected iterate and every iterate.

    ``metrics`` is the item's record (its inputs and ``summary``, the row summary.csv shows); ``caption`` renders an
    iterate's metrics under its tile in iterates.png; ``best_name`` is the selected image's file name.
    """

    optimisation: OptimResult
    metrics: dict
    caption: Callable[[dict], str]
    best_name: str = "best.png"
    peak_memory_mb: float = 0.0
    extra_images: dict[str, torch.Tensor] = field(default_factory=dict)
    """More images the item writes beside the standard ones (file name -> image tensor in [0, 1])."""
    details: dict = field(default_factory=dict)
    """What the method found on the way that the item's files do not hold (e.g. the candidate objects' scores)."""

    @property
    def image(self) -> torch.Tensor:
        """The selected iterate's image, (1, 3, H, W) in [0, 1] on the CPU."""
        return self.optimisation.best.image

    @property
    def initial_image(self) -> torch.Tensor:
        """Iterate 0: the plain sampler's image from the same start."""
        return self.optimisation.initial.image

    @property
    def iterates(self) -> list[Iterate]:
        return self.optimisation.iterates

    @property
    def summary(self) -> dict:
        """The item's numbers as the CLI's summary.csv row has them."""
        return self.metrics.get("summary", {})

    @property
    def error(self) -> str | None:
        return self.optimisation.error

    def pil(self) -> Image.Image:
        return tensor_to_pil(self.image)

    def record(self) -> dict:
        """metrics.json's content (the writer adds the run's config hash)."""
        result = self.optimisation
        return {**self.metrics, "best_iterate": result.best_index, "error": result.error,
                "seconds": round(result.seconds, 3), "peak_memory_mb": round(self.peak_memory_mb, 1),
                "iterates": [{"index": i.index, **i.metrics} for i in result.iterates]}

    def save(self, folder: str | Path, writer: Writer | None = None) -> Path:
        """Write init.png, the selected image, the captioned iterate strip, any extra images and (last, marking the
        item done) metrics.json into ``folder``: the files of the CLI's item folder."""
        folder = Path(folder)
        writer = writer or Writer(folder)
        result = self.optimisation
        writer.save_image(folder, "init.png", result.initial.image)
        writer.save_image(folder, self.best_name, result.best.image)
        for name, image in self.extra_images.items():
            writer.save_image(folder, name, image)
        kept = [i for i in result.iterates if i.image is not None]  # optimizer.keep_images_every
        writer.save_strip(folder, "iterates.png", [i.image for i in kept],
                          [f"it {i.index}{' *' if i.index == result.best_index else ''}\n{self.caption(i.metrics)}"
                           for i in kept])
        writer.save_metrics(folder, self.record())
        return folder
