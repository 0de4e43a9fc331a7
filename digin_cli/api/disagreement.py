"""Classifier disagreement (DiG-IN Sec. 4, Eq. 3) as a method: images that classifier f calls y and g does not.

``Disagreement(gen, f, g).generate("koala", seed=0)`` starts from SD's image for "a photograph of a koala" (z_T from
``seed``) and optimises z_T, the per-step prompt and null-text embeddings to maximise p_f(y|x) − p_g(y|x). Two
classifiers with different label sets are compared on the class both name alike. ``task=disagreement`` runs this
per (class, seed) and saves each result.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from digin_cli.api.builders import optimizer_settings
from digin_cli.api.common import cutouts_for, default_sampler
from digin_cli.api.results import OptimisationResult
from digin_cli.augment import Cutouts
from digin_cli.classifiers import Classifier, readable, resolve_in_both, same_label_set
from digin_cli.device import peak_memory_mb
from digin_cli.generation.models import StableDiffusion
from digin_cli.objectives import Disagreement as DisagreementObjective
from digin_cli.optimize import DiginOptimizer, OptimSettings


def caption(metrics: dict) -> str:
    return f"p_f {metrics['p_f']:.3g} / p_g {metrics['p_g']:.3g}"


@dataclass
class Disagreement:
    """DiG-IN Eq. 3 for classifiers ``f`` (maximised) and ``g`` (minimised) over generator ``gen``.

    ``settings`` is the ``optimizer`` group (authors' defaults), ``cutouts`` the augmentation (its settings; the
    random source is per call), ``prompt`` the paper's initial prompt ({} = the class name). ``sampler`` defaults to
    the one the generator was loaded with (DDIM, or LCM).
    """

    gen: StableDiffusion
    f: Classifier
    g: Classifier
    settings: OptimSettings | None = None
    cutouts: Cutouts | None = None
    prompt: str = "a photograph of a {}"
    sampler: object = None
    progress: object = None
    """The optimisation's progress callback (DiginOptimizer's ``progress``; the CLI passes its bar); None: silent."""

    def __post_init__(self):
        if self.settings is None or self.cutouts is None:  # the CLI's defaults: conf/optimizer/adam.yaml
            settings, cutouts = optimizer_settings("adam")
            self.settings, self.cutouts = self.settings or settings, self.cutouts or cutouts
        self.sampler = self.sampler or default_sampler(self.gen, self.settings)
        self._optimizer = DiginOptimizer(self.sampler, self.settings, progress=self.progress)

    def generate(self, class_: str | int, seed: int = 0, *, rng: torch.Generator | None = None,
                 class_g: int | None = None, description: str | None = None) -> OptimisationResult:
        """Optimise one image of ``class_`` (a name both classifiers resolve, or f's index) from z_T of ``seed``.

        ``rng`` draws the cutouts (default: seeded with ``seed``); ``class_g`` is the class's index in g's label set
        when the task has resolved it already. The result's ``summary`` holds p_f / p_g at the start and at the
        selected iterate.
        """
        y, y_g = resolve_in_both(class_, self.f.class_names, self.g.class_names)
        y_g = y_g if class_g is None else int(class_g)
        sd = self.gen
        prompt = self.prompt.format(readable(self.f.class_names[y]))
        z_T, noise = self.sampler.seeded_start(int(seed))  # LCM also needs its inter-step noise
        objective = DisagreementObjective(self.f, self.g, y, cutouts_for(self.cutouts, rng, seed, sd.device),
                                          target_g=y_g)
        result = self._optimizer.run(z_T, sd.encode_prompt(prompt), sd.null_embedding(), objective,
                                     description=description or f"{self.f.class_names[y]} · seed {seed}",
                                     noise=noise)
        init, best = result.initial.metrics, result.best.metrics
        summary = {"p_f_init": init["p_f"], "p_g_init": init["p_g"], "p_f_best": best["p_f"],
                   "p_g_best": best["p_g"], "best_iterate": result.best_index, "seconds": round(result.seconds, 2)}
        item = {"class": self.f.class_names[y], "class_index": y, "seed": int(seed)}
        if not same_label_set(self.f.class_names, self.g.class_names):
            item |= {"class2": self.g.class_names[y_g], "class2_index": y_g}
        return OptimisationResult(result, {**item, "prompt": prompt, "summary": summary}, caption,
                                  peak_memory_mb=peak_memory_mb(sd.device))
