"""Result objects of the method classes: images (tensors, PIL), metrics and iterates, in memory.

Nothing is written until ``result.save(folder)``, which writes exactly what the CLI writes for that item (the tasks
call the same ``save``, through their run's :class:`~digin_cli.io.writer.Writer`).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from PIL import Image

from digin_cli.io.atomic import atomic_save_image, atomic_write_bytes, atomic_write_text, tensor_to_pil
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


def explanation_caption(m: dict) -> str:
    parts = [f"p {m['p_class']:.3g}"] if "p_class" in m else []
    if "phi" in m:
        parts.append(f"phi {m['phi']:.3g}")
    return " · ".join(parts) or f"loss {m['loss']:.3g}"


def state_caption(state: dict | None) -> str:
    """A hard prompt's argmax words and their probability under an iterate's image, and the sampled words its
    training image was generated from when they differ."""
    if state is None:
        return ""
    line = f"\n{state['words']} {min(state['top_prob']):.2g}"
    return line + (f"\n(drew {state['sampled']})" if state["sampled"] not in (None, state["words"]) else "")


def text_path(states: list[dict | None]) -> str:
    """The argmax words each time they changed, e.g. "0: gradient · 12: honey · 40: bee" (report.html, summary)."""
    path, last = [], None
    for index, state in enumerate(states):
        if state is not None and state["words"] != last:
            path.append(f"{index}: {state['words']}")
            last = state["words"]
    return " · ".join(path)


@dataclass
class ExplanationResult:
    """A DiffExplainer explanation (soft or hard prompt): the learned prompt, its samples from fresh seeds with the
    classifier's confidence (and φ_f) under each, and the iterates.

    ``item`` is what it explains (class, feature, seed); ``extra_summary`` / ``extra_metrics`` a task's own results
    about it (spurious' object fractions), stored in the same metrics.json.
    """

    explanation: object  # digin_cli.explainer.Explanation
    item: dict
    peak_memory_mb: float = 0.0
    extra_summary: dict = field(default_factory=dict)
    extra_metrics: dict = field(default_factory=dict)
    per_row: int = 5

    @property
    def samples(self) -> torch.Tensor:
        """(N, 3, H, W) in [0, 1] on the CPU, from seeds the optimisation never saw."""
        return self.explanation.samples

    @property
    def text(self) -> str | None:
        """A hard prompt's decoded words (None for a soft prompt)."""
        return self.explanation.text

    @property
    def iterates(self) -> list[Iterate]:
        return self.explanation.result.iterates

    @property
    def error(self) -> str | None:
        return self.explanation.result.error

    def pil(self) -> list[Image.Image]:
        return [tensor_to_pil(image) for image in self.samples]

    def _states(self) -> list[dict | None]:
        states = list(self.explanation.prompt_states or [])
        return states + [None] * (len(self.iterates) - len(states))  # a run stopped by a non-finite loss

    @property
    def summary(self) -> dict:
        """The item's numbers as the CLI's summary.csv row has them."""
        ex, prompt = self.explanation, self.explanation.prompt
        losses, states = [i.loss for i in self.iterates], self._states()
        mean = {k: sum(m[k] for m in ex.sample_metrics) / len(ex.sample_metrics)
                for k in (ex.sample_metrics[0] if ex.sample_metrics else {})}
        summary = {**{f"samples_{k}": v for k, v in mean.items()}, "loss_first": losses[0], "loss_last": losses[-1],
                   "seconds": round(ex.result.seconds, 2), **({"text": ex.text} if ex.text is not None else {}),
                   **self.extra_summary}
        if states and states[0] is not None:
            summary |= {"initial_text": states[0]["text"], "top_prob": round(min(prompt.state()["top_prob"]), 4),
                        "text_per_iterate": text_path(states)}
        return summary

    def record(self) -> dict:
        """metrics.json's content (the writer adds the run's config hash)."""
        ex, result = self.explanation, self.explanation.result
        return {**self.item, **self.extra_metrics, "summary": self.summary,
                "nearest_tokens": ex.prompt.nearest_tokens(5), "text": ex.text, "embedding_norms": ex.prompt.norms(),
                "selected_iterate": result.best_index, "error": result.error, "seconds": round(result.seconds, 3),
                "peak_memory_mb": round(self.peak_memory_mb, 1), "sample_seeds": ex.sample_seeds,
                "samples": ex.sample_metrics,
                "iterates": [{"index": i.index, "train_loss": i.train_loss, **i.metrics, **(state or {})}
                             for i, state in zip(result.iterates, self._states())]}

    def save(self, folder: str | Path, writer: Writer | None = None) -> Path:
        """prompt.safetensors, samples.png (confidence / φ under each), loss.png, iterates.png, a hard prompt's
        explanation.txt, then (last, marking the item done) metrics.json: the CLI's item folder."""
        from safetensors.torch import save as safetensors_bytes

        from digin_cli.io.plots import line_chart

        folder = Path(folder)
        writer = writer or Writer(folder)
        ex, result, prompt = self.explanation, self.explanation.result, self.explanation.prompt
        learned = prompt.token_embeddings(sample=False).detach().float().cpu().clone()
        tensors = {"token_embeddings": learned, "input_ids": prompt.input_ids.cpu().contiguous(),
                   **{k: v.detach().cpu().contiguous() for k, v in prompt.state_dict().items()}}
        meta = {"prefix": prompt.prefix, "num_tokens": str(prompt.num_tokens), "slots": json.dumps(prompt.slots),
                "kind": type(prompt).__name__, **({"text": ex.text} if ex.text is not None else {})}
        atomic_write_bytes(folder / "prompt.safetensors", safetensors_bytes(tensors, metadata=meta))
        captions = [explanation_caption(m) for m in ex.sample_metrics]
        images, per_row = list(ex.samples), self.per_row
        if images:
            rows = [(images[i:i + per_row], captions[i:i + per_row]) for i in range(0, len(images), per_row)]
            target = " / ".join(str(v) for v in (self.item.get("class"), self.item.get("feature")) if v is not None)
            title = f"{target}: {ex.text or f'{prompt.prefix} + {prompt.num_tokens} learned token(s)'.strip()}"
            writer.save_grid(folder, "samples.png", rows, title=title)
        losses, train = [i.loss for i in result.iterates], [i.train_loss for i in result.iterates]
        atomic_save_image(folder / "loss.png", line_chart({"loss (plain)": losses, "training loss": train},
                                                          title="loss per optimisation step (a new z each step)"))
        states = self._states()
        kept = [i for i in result.iterates if i.image is not None]
        writer.save_strip(folder, "iterates.png", [i.image for i in kept],
                          [f"it {i.index}\n{explanation_caption(i.metrics)}{state_caption(states[i.index])}"
                           for i in kept])
        if ex.text is not None:  # the explanation itself: the decoded words its samples come from
            atomic_write_text(folder / "explanation.txt", ex.text + "\n")
        writer.save_metrics(folder, self.record())
        return folder
