"""Core / spurious feature labels (DiffExplainer Sec. 3.3, Eq. 6) as a method.

``SpuriousFinder(gen, clf, detector).label("tench", [12, 870])``: per feature f of the class c, optimise the soft
prompt t*_{c,f} on Eq. 5, CE(φ(x), c) − φ_f(x) (:class:`~digin_cli.api.PromptExplainer`'s machinery), sample
``num_samples`` images from fresh z, segment each with the class name as text (``detector``: GroundingDINO boxes ->
SAM masks, ``digin.load_segmenter("grounded_sam")``), r = object pixels / all pixels (0 when nothing is found), and
label the feature core when E[r] >= ``delta``, else spurious. ``task=spurious`` runs this per (class, feature) and
adds the per-class tables and the agreement with annotations.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from time import perf_counter

import torch

from digin_cli import explainer
from digin_cli.api.builders import optimizer_settings
from digin_cli.api.common import argument_names, default_sampler
from digin_cli.api.results import ExplanationResult
from digin_cli.classifiers import Classifier, resolve_class
from digin_cli.data.annotations import check_delta, decide
from digin_cli.device import peak_memory_mb
from digin_cli.errors import DiginError
from digin_cli.generation.models import StableDiffusion
from digin_cli.generation.prompts import check_prompt
from digin_cli.io.writer import Writer
from digin_cli.optimize import OptimSettings
from digin_cli.segmentation.postprocess import overlay


def with_boxes(image: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """``image`` (3, H, W) with the detection boxes outlined in yellow (1 px)."""
    image = image.clone()
    height, width = image.shape[-2:]
    yellow = torch.tensor([1.0, 0.9, 0.1], device=image.device)[:, None]
    for x0, y0, x1, y1 in boxes.round().long().tolist():
        x0, x1 = sorted((min(max(x0, 0), width - 1), min(max(x1, 0), width - 1)))
        y0, y1 = sorted((min(max(y0, 0), height - 1), min(max(y1, 0), height - 1)))
        image[:, y0:y1 + 1, x0] = image[:, y0:y1 + 1, x1] = yellow
        image[:, y0, x0:x1 + 1] = image[:, y1, x0:x1 + 1] = yellow
    return image


@dataclass
class SpuriousResult(ExplanationResult):
    """One feature's explanation, its samples segmented with the class name, and the label (``summary["label"]``,
    ``summary["E_r"]``, ``summary["r"]``). ``overlays``: each sample with its mask and boxes."""

    overlays: list[torch.Tensor] = field(default_factory=list)
    strip_captions: list[str] = field(default_factory=list)
    strip_title: str = ""

    @property
    def label(self) -> str:
        return self.extra_summary["label"]

    def save(self, folder: str | Path, writer: Writer | None = None) -> Path:
        """The samples and their overlays one file each, overlays.png, then explain's files and metrics.json."""
        folder = Path(folder)
        writer = writer or Writer(folder)
        for k, (image, over) in enumerate(zip(self.samples, self.overlays)):
            writer.save_image(folder, f"sample_{k:02d}.png", image)
            writer.save_image(folder, f"overlay_{k:02d}.png", over)
        writer.save_strip(folder, "overlays.png", self.overlays, self.strip_captions, title=self.strip_title)
        return super().save(folder, writer)


@dataclass
class SpuriousFinder:
    """DiffExplainer Eq. 6 over generator ``gen`` (LCM-LoRA: ``digin.load_generator("lcm_lora")``), classifier
    ``clf`` and a text-prompted segmenter ``detector``; the prompt and loop settings are explain's (``settings``:
    ``conf/optimizer/prompt.yaml``), ``delta`` the threshold on E[r] (not given in the paper)."""

    gen: StableDiffusion
    clf: Classifier
    detector: object
    settings: OptimSettings | None = None
    delta: float = 0.1
    num_samples: int = 10
    seed: int = 0
    feature_weight: float = 1.0
    prefix: str = ""
    num_tokens: int = 1
    init: str = "random"
    sampler: object = None
    progress: object = None
    """The optimisation's progress callback (DiginOptimizer's ``progress``; the CLI passes its bar); None: silent."""

    def __post_init__(self):
        if not getattr(self.detector, "text_prompted", False):
            raise DiginError(f"{type(self.detector).__name__} cannot segment by text — pass a text-prompted "
                             "segmenter, e.g. digin.load_segmenter('grounded_sam')")
        with argument_names({"task.delta": "delta"}):  # task=spurious checks task.delta before any model loads
            self.delta = check_delta(self.delta)
        if int(self.num_samples) < 1:
            raise DiginError(f"num_samples must be >= 1, got {self.num_samples} — the paper uses 10")
        if self.settings is None:
            self.settings = optimizer_settings("prompt")[0]
        self.sampler = self.sampler or default_sampler(self.gen, self.settings)
        check_prompt(self.gen.tokenizer, str(self.prefix), int(self.num_tokens), str(self.init))
        self._engine = explainer.PromptExplainer(self.gen, self.sampler, self.settings, progress=self.progress)

    def label(self, class_: str | int, features: int | Sequence[int], *, ranks: Sequence[int] | None = None,
              callback: Callable | None = None) -> list[SpuriousResult]:
        """Core or spurious, for each of ``features`` (feature indices of ``clf``'s penultimate layer) of ``class_``.

        ``ranks`` are the features' places in a ranking (default 1, 2, ...), kept in each result's record."""
        c = resolve_class(class_, self.clf.class_names)
        features = [int(features)] if isinstance(features, int) else [int(j) for j in features]
        ranks = list(ranks) if ranks is not None else list(range(1, len(features) + 1))
        return [self._one(c, j, rank, callback) for j, rank in zip(features, ranks)]

    def _one(self, c: int, feature: int, rank: int, callback: Callable | None) -> SpuriousResult:
        name, f = self.clf.class_names[c], self.clf
        prompt = self._engine.soft_prompt(str(self.prefix), int(self.num_tokens), str(self.init), int(self.seed))
        objective = explainer.explanation_objective(f, c, feature, float(self.feature_weight))
        start = perf_counter()
        explanation = self._engine.explain(prompt, objective, int(self.seed), int(self.num_samples),
                                           f"{name} · feature {feature}", callback=callback)
        explained = perf_counter()
        found = self.detector.segment_text(explanation.samples, name)
        segmented = perf_counter()
        mean, label = decide(found.fractions, self.delta)
        images = explanation.samples
        overlays = [with_boxes(overlay(im[None], m[None])[0], b)
                    for im, m, b in zip(images, found.masks.to(images.device), found.boxes)]
        # The explainer times its optimisation; the rest of explain() is sampling the explanation distribution.
        optimise = explanation.result.seconds
        seconds = {"seconds_optimise": round(optimise, 3), "seconds_sample": round(explained - start - optimise, 3),
                   "seconds_segment": round(segmented - explained, 3)}
        summary = {"E_r": round(mean, 6), "label": label, "detected": sum(found.detected),
                   "r": [round(r, 6) for r in found.fractions], **seconds}
        samples = [{"seed": s, "r": r, "detected": d, "boxes": b.tolist(), "scores": sc.tolist()}
                   for s, r, d, b, sc in zip(explanation.sample_seeds, found.fractions, found.detected, found.boxes,
                                             found.scores)]
        item = {"class": name, "class_index": c, "feature": feature, "rank": rank}
        extra = {"delta": self.delta, "segmentation": getattr(self.detector, "name", type(self.detector).__name__),
                 "segmentation_text": name, "segmented": samples}
        captions = [f"r {r:.3f}" + ("" if d else "\nnot found") for r, d in zip(found.fractions, found.detected)]
        return SpuriousResult(explanation, item, peak_memory_mb(self.gen.device), summary, extra, overlays=overlays,
                              strip_captions=captions,
                              strip_title=f"'{name}' in feature {feature}'s explanations: E[r] {mean:.3f} -> {label}")
