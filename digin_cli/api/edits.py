"""What the real-image methods return: an edit of a real image in memory, written only by ``result.save``.

An :class:`EditResult` is an :class:`~digin_cli.api.results.OptimisationResult` with the edited image's original,
reconstruction and object mask: ``save`` writes original.png, reconstruction.png, mask_overlay.png, mask.png
(attention.png for counterfactuals), init.png, counterfactual.png, iterates.png and metrics.json, the files of a CLI
item folder (the tasks call the same ``save`` with their run's writer).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from digin_cli.api.results import OptimisationResult
from digin_cli.io.writer import Writer
from digin_cli.segmentation.postprocess import overlay


def distances(best: torch.Tensor, original: torch.Tensor, region: torch.Tensor, name: str) -> dict[str, float]:
    """Per-pixel L1 (mean |Δ|) and L2 (root mean square Δ), over the whole image and over ``region`` (1 = counted;
    the background for vce, the object for neuron counterfactuals), the latter as ``l1_<name>`` / ``l2_<name>``."""
    diff = (best.to(original.device) - original).abs()
    region = region.to(original.device).expand_as(diff)
    weight = region.sum().clamp_min(1e-8)
    return {"l1": diff.mean().item(), "l2": diff.pow(2).mean().sqrt().item(),
            f"l1_{name}": (diff * region).sum().item() / weight.item(),
            f"l2_{name}": ((diff.pow(2) * region).sum() / weight).sqrt().item()}


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
class EditResult(OptimisationResult):
    """One edited real image: a visual counterfactual, a neuron counterfactual or an NPCA maximisation.

    ``summary`` holds the item's numbers (probabilities / feature values before and after, distances, mask coverage),
    ``metrics`` all of metrics.json (the item, caption, prompts, the chosen prompt-to-prompt schedule, the inversion's
    reconstruction error, ``summary``). Images are ``(1, 3, H, W)`` tensors in [0, 1] on the CPU; ``image`` is the
    counterfactual.
    """

    original: torch.Tensor | None = None
    reconstruction: torch.Tensor | None = None
    """The inversion's reconstruction of ``original`` (what the edit starts from)."""
    mask: torch.Tensor | None = None
    """The segmenter's pixel mask ``(1, 1, H, W)`` of the object (1 = object)."""
    attention: torch.Tensor | None = None
    """The object words' cross-attention map the mask was made from."""
    strip: tuple[str, str, str] | None = None
    """``(file name, title, value key)`` of a before/after strip drawn into the item folder (NPCA's npca.png)."""

    def save(self, folder: str | Path, writer: Writer | None = None) -> Path:
        """Write the item's files into ``folder`` as the CLI writes one item folder; returns ``folder``."""
        folder = super().save(folder, writer)
        if self.strip is not None:  # read back from the finished item: after metrics.json
            name, title, value = self.strip
            before_after_strip(writer or Writer(folder), folder, name, folder, [("max. NPCA", folder)], title,
                               value=value)
        return folder


def edit_result(prep, optimisation, metrics: dict, caption, peak_memory_mb: float, attention: bool = False,
                strip: tuple[str, str, str] | None = None) -> EditResult:
    """The result of an edit of the prepared image ``prep`` (:class:`~digin_cli.counterfactual.PreparedImage`):
    its original, reconstruction and mask beside the optimisation; ``attention``: also write attention.png."""
    original, mask = prep.inversion.original.detach().cpu(), prep.px_mask.detach().cpu()
    images = {"original.png": original, "reconstruction.png": prep.reconstruction.detach().cpu(),
              "mask_overlay.png": overlay(original, mask),
              "mask.png": mask[0]}  # grey, 1 = object: digin evaluate's regions
    if attention:
        images["attention.png"] = prep.attention.detach().cpu().expand(3, -1, -1)
    return EditResult(optimisation, metrics, caption, "counterfactual.png", peak_memory_mb, images,
                      original=original, reconstruction=images["reconstruction.png"], mask=mask,
                      attention=prep.attention.detach().cpu(), strip=strip)
