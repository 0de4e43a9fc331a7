"""Stable Diffusion's safety checker over a run's images: no participant of a study is shown unsafe content.

DiffExplainer (Sec. 5, ethics) names NSFW generations as a risk of optimising through Stable Diffusion: an
objective that only asks for a class can drift anywhere SD can go. diffusers ships the checker SD's own pipelines run
(:class:`StableDiffusionSafetyChecker`, hub model ``CompVis/stable-diffusion-safety-checker`` + its CLIP image
processor); this module runs it unchanged over image files and records the verdicts beside the images
(``safety.json`` in an item folder). ``digin study make`` always runs it and leaves flagged items out; a run with
``safety=true`` runs it after each item and ``report.html`` blurs what it flagged.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from functools import lru_cache
from pathlib import Path

from digin_cli.errors import hub_loading
from digin_cli.io.atomic import atomic_write_json
from digin_cli.io.report import IMAGE_SUFFIXES, SAFETY

DEFAULT_CHECKER = "CompVis/stable-diffusion-safety-checker"
BATCH = 8

#: A checker: PIL images in, one "flagged" verdict per image out (the real one, or a stand-in in tests).
Checker = Callable[[Sequence], list[bool]]


class SafetyChecker:
    """diffusers' :class:`StableDiffusionSafetyChecker` with its CLIP image processor, as SD's pipelines call it."""

    def __init__(self, model, processor, name: str, device: str = "cpu"):
        self.model = model.to(device).eval()
        self.processor = processor
        self.name = name
        self.device = device

    @classmethod
    def load(cls, source: str = DEFAULT_CHECKER, device: str = "cpu") -> SafetyChecker:
        """From a hub id (honouring the HF cache and offline mode) or a folder written by ``save_pretrained``."""
        from diffusers.pipelines.stable_diffusion.safety_checker import StableDiffusionSafetyChecker
        from transformers import CLIPImageProcessor

        with hub_loading(source, what="the safety checker", pronoun="it",
                         fix=f"or pass a local folder (huggingface-cli download {DEFAULT_CHECKER})",
                         local_fix="point it at a folder holding StableDiffusionSafetyChecker.save_pretrained and "
                                   "CLIPImageProcessor.save_pretrained files"):
            model = StableDiffusionSafetyChecker.from_pretrained(source)
            processor = CLIPImageProcessor.from_pretrained(source)
        return cls(model, processor, source, device)

    def __call__(self, images: Sequence) -> list[bool]:
        import numpy as np
        import torch

        flags: list[bool] = []
        for start in range(0, len(images), BATCH):
            batch = [im.convert("RGB") for im in images[start:start + BATCH]]
            pixels = self.processor(images=batch, return_tensors="pt").pixel_values.to(self.device)
            blank = np.zeros((len(batch), 1, 1, 3), dtype=np.float32)  # the checker blacks out flagged ones here
            with torch.no_grad():
                _, flagged = self.model(clip_input=pixels, images=blank)
            flags += [bool(f) for f in flagged]
        return flags


@lru_cache(maxsize=2)
def cached_checker(source: str, device: str = "cpu") -> SafetyChecker:
    """One checker per (model, device) and process: a run checks every item with the same one."""
    return SafetyChecker.load(source, device)


def sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def check_files(checker: Checker, files: Sequence[Path]) -> dict[Path, bool]:
    """Verdict per file (decoded with PIL; a file that does not decode is flagged: it cannot be shown as checked)."""
    from PIL import Image, UnidentifiedImageError

    readable, verdicts = [], {}
    for path in files:
        try:
            with Image.open(path) as image:
                readable.append((path, image.convert("RGB")))
        except (OSError, UnidentifiedImageError):
            verdicts[path] = True
    flags = checker([image for _, image in readable]) if readable else []
    verdicts.update({path: flag for (path, _), flag in zip(readable, flags)})
    return {path: verdicts[path] for path in files}


def check_folder(checker: Checker, folder: Path, name: str) -> dict:
    """Check every image of an item folder and write its ``safety.json``: {checker, images: {file: {flagged,
    sha256}}, flagged: [file, ...]}; returns that record."""
    folder = Path(folder)
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
                   and not p.name.startswith("."))
    verdicts = check_files(checker, files)
    record = {"checker": name, "images": {p.name: {"flagged": verdicts[p], "sha256": sha256(p)} for p in files},
              "flagged": [p.name for p in files if verdicts[p]]}
    atomic_write_json(folder / SAFETY, record)
    return record


def check_file(checker: Checker, path: Path, name: str) -> dict:
    """Single-file items (task=sample): the record goes to ``<name>.safety.json`` beside the image."""
    path = Path(path)
    flagged = check_files(checker, [path])[path]
    record = {"checker": name, "images": {path.name: {"flagged": flagged, "sha256": sha256(path)}},
              "flagged": [path.name] if flagged else []}
    atomic_write_json(path.with_name(f"{path.name}.{SAFETY}"), record)
    return record
