"""Neuron visualisation (DiG-IN Sec. 6, Eq. 6) as a method: generated images that maximise or minimise one feature.

``NeuronVisualiser(gen, clf).visualise(870, direction="max", prompt="a photograph of a crab")`` starts from SD's image
for the prompt (z_T from ``seed``) and optimises z_T and the per-step deltas on ∓φ_n
(:class:`~digin_cli.objectives.FeatureActivation`), reporting the confidence in ``report_class``. Without a prompt,
the best of ``objects`` by the mean φ_n of plain samples (the authors' object choice, :func:`object_scores`) or the
class's name starts it. ``keep_words`` pins the foreground of those words in the first SD sample for the first
``keep_until`` of the steps (the authors' class-neuron script; needs a ``segmenter``). ``task=neuron`` runs this per
(neuron, direction, seed) and adds the object lists, top real images and grids.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import torch

from digin_cli.api.builders import optimizer_settings
from digin_cli.api.common import cutouts_for, default_sampler
from digin_cli.api.results import OptimisationResult
from digin_cli.augment import Cutouts
from digin_cli.captioning.object_words import caption_name
from digin_cli.classifiers import Classifier
from digin_cli.counterfactual import generated_object, pin_region
from digin_cli.device import peak_memory_mb
from digin_cli.errors import DiginError
from digin_cli.generation.models import StableDiffusion
from digin_cli.generation.sampler import SamplerHooks
from digin_cli.objectives import FeatureActivation
from digin_cli.optimize import DiginOptimizer, OptimSettings
from digin_cli.segmentation.postprocess import overlay

OBJECT_SEED_BASE = 1_000_000  # object scores use seeds 10^6, 10^6 + 1, ...: disjoint from the optimisation seeds
DIRECTIONS = {"max": 1, "min": -1}


def check_keep_words(prompt: str, words: str, key: str = "keep_words") -> None:
    """The words whose foreground is pinned must name something in the prompt (as a whole word); ``key`` is how the
    caller passed them (``task.mask_words`` on the command line)."""
    if not re.search(rf"(?<!\w){re.escape(words)}(?!\w)", prompt, re.IGNORECASE):
        raise DiginError(f"{key} '{words}' does not occur in the prompt '{prompt}' — pass words of the prompt naming "
                         "the object")


def caption(metrics: dict) -> str:
    return f"phi {metrics['phi']:.3g}" + (f" p {metrics['p_class']:.2g}" if "p_class" in metrics else "")


def object_scores(gen: StableDiffusion, sampler, clf: Classifier, neuron: int, objects: list[str],
                  template: str = "a photograph of a {}", samples: int = 8) -> list[dict]:
    """Per object: the mean φ_n (and each sample's) of ``samples`` plain samples of ``template.format(object)``, from
    seeds 10^6, 10^6 + 1, ... (the authors' 8 samples per object; disjoint from any optimisation seed, so the score
    is not the start image's)."""
    scoring = [OBJECT_SEED_BASE + s for s in range(int(samples))]
    z = torch.cat([gen.initial_latent(s) for s in scoring])
    null = gen.null_embedding()
    rows = []
    for obj in objects:
        prompt = template.format(obj)
        with torch.no_grad():
            cond = gen.encode_prompt(prompt).expand(len(z), -1, -1)
            images = sampler.decode(sampler.sample(z, cond, null.expand(len(z), -1, -1)).latents)
            phis = clf.features(images)[:, neuron]
        rows.append({"object": obj, "prompt": prompt, "mean_phi": phis.mean().item(),
                     **{f"phi_seed_{s}": v for s, v in zip(scoring, phis.tolist())}})
    return rows


@dataclass
class NeuronVisualiser:
    """DiG-IN Eq. 6 for feature n of ``clf`` (the input of its linear head) over generator ``gen``.

    ``settings`` / ``cutouts``: the ``optimizer`` group (authors' defaults); ``segmenter``: for ``keep_words`` only;
    ``template``: the prompt an object or class name goes into; ``object_samples``: plain samples per candidate
    object; ``keep_until`` / ``mask_steps``: the pinned share of the steps and the attention steps of the mask.
    """

    gen: StableDiffusion
    clf: Classifier
    settings: OptimSettings | None = None
    cutouts: Cutouts | None = None
    segmenter: object = None
    template: str = "a photograph of a {}"
    object_samples: int = 8
    keep_until: float = 0.3
    mask_steps: float = 0.5
    sampler: object = None
    progress: object = None
    """The optimisation's progress callback (DiginOptimizer's ``progress``; the CLI passes its bar); None: silent."""
    _scores: dict = field(default_factory=dict, repr=False)

    def __post_init__(self):
        if self.settings is None or self.cutouts is None:  # the CLI's defaults: conf/optimizer/adam.yaml
            settings, cutouts = optimizer_settings("adam")
            self.settings, self.cutouts = self.settings or settings, self.cutouts or cutouts
        self.sampler = self.sampler or default_sampler(self.gen, self.settings)

    def visualise(self, neuron: int, direction: str = "max", prompt: str | None = None, *, seed: int = 0,
                  report_class: int | None = None, objects: list[str] | None = None, keep_words: str | None = None,
                  rng: torch.Generator | None = None) -> OptimisationResult:
        """Maximise (``direction="max"``) or minimise (``"min"``) φ_``neuron`` from z_T of ``seed``.

        The start is ``prompt``; else the best of ``objects`` (highest mean φ_n, lowest for ``min``; the scores are
        in ``result.details["objects"]``); else ``report_class``'s name. ``rng`` draws the cutouts (default: seeded
        with ``seed``). The summary holds φ_n and p(report_class) at the start and the selected iterate.
        """
        if direction not in DIRECTIONS:
            raise DiginError(f"unknown direction '{direction}' — use direction='max' or 'min'")
        sign, sd, f = DIRECTIONS[direction], self.gen, self.clf
        details = {}
        if prompt is None:
            prompt, details = self._start_prompt(neuron, sign, report_class, objects)
        objective = FeatureActivation(f, int(neuron), sign, cutouts_for(self.cutouts, rng, seed, sd.device),
                                      report_class=report_class)
        null = sd.null_embedding()
        z_T, hooks, extra = sd.initial_latent(int(seed)), None, {}
        if keep_words:
            if self.segmenter is None:
                raise DiginError("keeping the object pins its mask, but no segmenter was given — pass segmenter="
                                 "digin.load_segmenter('sam_hq') (or keep_words=None)")
            check_keep_words(prompt, keep_words)
            obj = generated_object(sd, self.sampler, self.segmenter, z_T, prompt, null, keep_words, self.mask_steps)
            hooks = SamplerHooks(before_step=pin_region(obj.latent_mask, obj.trajectory, self.keep_until,
                                                        self.sampler.num_steps))
            extra["mask_overlay.png"] = overlay(obj.image.cpu(), obj.px_mask.cpu())
        result = DiginOptimizer(self.sampler, self.settings, hooks, progress=self.progress).run(
            z_T, sd.encode_prompt(prompt), null, objective, description=f"neuron {neuron} {direction} · seed {seed}")
        init, best = result.initial.metrics, result.best.metrics
        with torch.no_grad():
            predicted = int(f(result.best.image.to(sd.device)).argmax())
        peak = peak_memory_mb(sd.device)
        summary = {"prompt": prompt, "phi_init": init["phi"], "phi_best": best["phi"],
                   "p_class_init": init.get("p_class"), "p_class_best": best.get("p_class"),
                   "predicted": f.class_names[predicted], "best_iterate": result.best_index,
                   "seconds": round(result.seconds, 2), "peak_memory_mb": round(peak, 1)}
        if keep_words:
            summary |= {"mask_words": keep_words, "mask_coverage": obj.px_mask.mean().item()}
        item = {"neuron": int(neuron), "class": f.class_names[report_class] if report_class is not None else "",
                "class_index": report_class, "direction": direction, "seed": int(seed)}
        return OptimisationResult(result, {**item, "prompt": prompt, "summary": summary}, caption,
                                  peak_memory_mb=peak, extra_images=extra, details=details)

    def _start_prompt(self, neuron: int, sign: int, report_class: int | None,
                      objects: list[str] | None) -> tuple[str, dict]:
        if objects:
            key = (int(neuron), tuple(objects))
            if key not in self._scores:  # both directions and every seed share one scoring
                self._scores[key] = object_scores(self.gen, self.sampler, self.clf, neuron, list(objects),
                                                  self.template, self.object_samples)
            rows = self._scores[key]
            best = max(rows, key=lambda r: sign * r["mean_phi"])
            return self.template.format(best["object"]), {"objects": rows}
        if report_class is None:
            raise DiginError("no starting prompt for a neuron without an associated class — pass prompt='a "
                             "photograph of a ...', objects=[...] or report_class=<class index>")
        return self.template.format(caption_name(self.clf.class_names, report_class)), {}
