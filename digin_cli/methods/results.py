"""What the real-image methods return, and the one way their files are written (by ``result.save`` and the CLI).

An :class:`EditResult` holds an edit of a real image in memory: the original, its reconstruction and mask, the
optimisation's iterates and the item's metrics. It writes nothing until :meth:`EditResult.save`, which writes exactly
the files the CLI writes for that item (the CLI calls the same method with its own :class:`Writer`).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from digin_cli.io.atomic import tensor_to_pil
from digin_cli.io.writer import Writer
from digin_cli.optimize import OptimResult


def distances(best: torch.Tensor, original: torch.Tensor, region: torch.Tensor, name: str) -> dict[str, float]:
    """Per-pixel L1 (mean |Δ|) and L2 (root mean square Δ), over the whole image and over ``region`` (1 = counted;
    the background for vce, the object for neuron counterfactuals), the latter as ``l1_<name>`` / ``l2_<name>``."""
    diff = (best.to(original.device) - original).abs()
    region = region.to(original.device).expand_as(diff)
    weight = region.sum().clamp_min(1e-8)
    return {"l1": diff.mean().item(), "l2": diff.pow(2).mean().sqrt().item(),
            f"l1_{name}": (diff * region).sum().item() / weight.item(),
            f"l2_{name}": ((diff.pow(2) * region).sum() / weight).sqrt().item()}


def overlay(image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The image dimmed outside the mask and tinted red inside it."""
    red = torch.tensor([1.0, 0.2, 0.2], device=image.device).view(1, 3, 1, 1)
    return (image * (0.35 + 0.65 * mask) * (1 - 0.35 * mask) + 0.35 * mask * red).clamp(0, 1)


def write_optimisation(writer: Writer, item_dir: Path, result: OptimResult, caption: Callable[[dict], str],
                       metrics: dict, best_name: str = "best.png", peak_memory_mb: float = math.nan) -> None:
    """Write init.png, the selected iterate (``best_name``: real-image methods call it counterfactual.png, once), the
    captioned iterate strip and (last, marking the item done) metrics.json."""
    writer.save_image(item_dir, "init.png", result.initial.image)
    writer.save_image(item_dir, best_name, result.best.image)
    kept = [i for i in result.iterates if i.image is not None]  # optimizer.keep_images_every
    writer.save_strip(item_dir, "iterates.png", [i.image for i in kept],
                      [f"it {i.index}{' *' if i.index == result.best_index else ''}\n{caption(i.metrics)}"
                       for i in kept])
    metrics = {**metrics, "best_iterate": result.best_index, "error": result.error,
               "seconds": round(result.seconds, 3), "peak_memory_mb": round(peak_memory_mb, 1),
               "iterates": [{"index": i.index, **i.metrics} for i in result.iterates]}
    writer.save_metrics(item_dir, metrics)


def before_after_strip(writer: Writer, folder: Path, name: str, original_dir: Path | None,
                       edited: list[tuple[str, Path]], title: str, value: str = "phi") -> None:
    """A Fig. 10/11-style strip read back from finished item folders: the test image, then each edit, captioned with
    the feature value (``value``: φ·v or α) and the class confidence."""
    from PIL import Image

    def tile(item_dir: Path, key: str, label: str):
        try:
            summary = json.loads((item_dir / "metrics.json").read_text()).get("summary", {})
            image = Image.open(item_dir / ("original.png" if key == "before" else "counterfactual.png"))
        except (OSError, ValueError):
            return None
        p = summary.get(f"p_class_{key}")
        return image.convert("RGB"), f"{label}\n{summary[f'{value}_{key}']:.3g}" + (f" ({p:.2f})" if p is not None
                                                                               else "")

    tiles = [t for t in ([tile(original_dir, "before", "test image")] if original_dir else [])
             + [tile(d, "after", label) for label, d in edited] if t is not None]
    if tiles:
        writer.save_strip(folder, name, [t for t, _ in tiles], [c for _, c in tiles], title)


@dataclass
class EditResult:
    """One edited real image (a visual counterfactual, a neuron counterfactual or an NPCA maximisation).

    ``metrics`` is the item's summary (probabilities / feature values before and after, distances, mask coverage);
    ``record`` the rest of its ``metrics.json`` (caption, prompts, the chosen prompt-to-prompt schedule, the
    inversion's reconstruction error). Images are ``(1, 3, H, W)`` tensors in [0, 1] on the CPU.
    """

    original: torch.Tensor
    reconstruction: torch.Tensor
    mask: torch.Tensor
    """The segmenter's pixel mask ``(1, 1, H, W)`` of the object (1 = object)."""
    optimisation: OptimResult
    metrics: dict
    record: dict
    caption: Callable[[dict], str] = field(repr=False)
    """How the iterate strip captions an iterate's metrics."""
    attention: torch.Tensor | None = None
    """The object words' cross-attention map (visual counterfactuals write it as attention.png)."""
    strip: tuple[str, str, str] | None = None
    """``(file name, title, value key)`` of a before/after strip written into the item folder (NPCA's npca.png)."""
    peak_memory_mb: float = math.nan
    item: dict = field(default_factory=dict)
    """What the item is (image, start, target / neuron ...): the first entries of its metrics.json."""

    @property
    def image(self) -> torch.Tensor:
        """The selected iterate: the counterfactual."""
        return self.optimisation.best.image

    @property
    def init(self) -> torch.Tensor:
        """Iterate 0: the prompt-to-prompt edit before optimisation."""
        return self.optimisation.initial.image

    @property
    def iterates(self) -> list:
        return self.optimisation.iterates

    def pil(self):
        """The counterfactual as a PIL image."""
        return tensor_to_pil(self.image)

    def save(self, folder: str | Path, writer: Writer | None = None) -> Path:
        """Write the item's files into ``folder``, as the CLI writes one item folder: original.png,
        reconstruction.png, mask_overlay.png (attention.png), init.png, counterfactual.png, iterates.png and, last,
        metrics.json. Returns ``folder``."""
        folder = Path(folder)
        writer = writer if writer is not None else Writer(folder)
        writer.save_image(folder, "original.png", self.original)
        writer.save_image(folder, "reconstruction.png", self.reconstruction)
        writer.save_image(folder, "mask_overlay.png", overlay(self.original, self.mask))
        if self.attention is not None:
            writer.save_image(folder, "attention.png", self.attention.expand(3, -1, -1))
        write_optimisation(writer, folder, self.optimisation, self.caption,
                           {**self.item, **self.record, "summary": self.metrics}, best_name="counterfactual.png",
                           peak_memory_mb=self.peak_memory_mb)
        if self.strip is not None:
            name, title, value = self.strip
            before_after_strip(writer, folder, name, folder, [("max. NPCA", folder)], title, value=value)
        return folder
