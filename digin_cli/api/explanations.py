"""DiffExplainer explanations (Sec. 3.2 Eq. 3-5, Sec. 4.4) as a method: prompts whose images explain a class or a
feature of a classifier.

``PromptExplainer(gen, clf).explain(class_="bee")`` optimises a soft prompt [SOS, prefix, learnable tokens, EOS]
through the generator's sampler (LCM-LoRA: ``digin.load_generator("lcm_lora")``) with a new z every step, so that its
images minimise −log p_c (Eq. 3), maximise φ_f (``feature=``, Eq. 4) or both (Eq. 5), then samples the explanation
from fresh seeds. ``explain_text`` does the same with a hard prompt (a Gumbel-softmax word per token): the explanation
is the decoded text. ``task=explain`` / ``task=hard_prompt`` run these per (class, feature, seed).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from os import PathLike

from digin_cli import explainer
from digin_cli.api.builders import optimizer_settings
from digin_cli.api.common import argument_names, default_sampler
from digin_cli.api.results import ExplanationResult
from digin_cli.classifiers import Classifier, resolve_class
from digin_cli.device import peak_memory_mb
from digin_cli.errors import DiginError
from digin_cli.generation.models import StableDiffusion
from digin_cli.generation.prompts import check_prompt, vocabulary_ids
from digin_cli.optimize import OptimSettings


def _check_target(class_, feature) -> None:
    # explainer.explanation_objective says it with the CLI's keys; the CLI refuses an empty task before any item.
    if class_ is None and feature is None:
        raise DiginError("an explanation needs a class or a feature — pass class_= and/or feature=")


def _preset(name: str) -> OptimSettings:
    return optimizer_settings(name)[0]


@dataclass
class PromptExplainer:
    """Soft and hard prompt explanations of ``clf`` over generator ``gen``.

    ``settings`` defaults to ``conf/optimizer/prompt.yaml`` (soft prompts: AdamW, a new z per step, the last
    iterate) and ``text_settings`` to ``hard_prompt.yaml`` (Adam lr 0.3 on the vocabulary logits), the CLI's
    defaults. No cutouts (the paper names none).
    """

    gen: StableDiffusion
    clf: Classifier
    settings: OptimSettings | None = None
    text_settings: OptimSettings | None = None
    sampler: object = None
    progress: object = None
    """The optimisation's progress callback (DiginOptimizer's ``progress``; the CLI passes its bar); None: silent."""

    def __post_init__(self):
        self.settings = self.settings or _preset("prompt")
        self.sampler = self.sampler or default_sampler(self.gen, self.settings)
        self._engine = explainer.PromptExplainer(self.gen, self.sampler, self.settings, progress=self.progress)

    def explain(self, class_: str | int | None = None, feature: int | None = None, *, seed: int = 0,
                prefix: str = "", num_tokens: int = 1, init: str = "random", num_samples: int = 10,
                feature_weight: float = 1.0, callback: Callable | None = None) -> ExplanationResult:
        """A soft prompt for ``class_`` (Eq. 3), ``feature`` (Eq. 4) or both (Eq. 5, ``feature_weight`` on φ_f).

        ``prefix`` is fixed text before the ``num_tokens`` learnable tokens (Fig. 4: "a texture of"); ``init`` is
        ``random`` or a word whose embedding starts them; ``seed`` starts the stream of z; ``num_samples`` images are
        drawn from fresh seeds afterwards. ``callback(iterate)`` sees every iterate (loss curves)."""
        _check_target(class_, feature)
        check_prompt(self.gen.tokenizer, str(prefix), int(num_tokens), str(init))
        prompt = self._engine.soft_prompt(str(prefix), int(num_tokens), str(init), int(seed))
        return self._run(self._engine, prompt, class_, feature, seed, num_samples, feature_weight, callback)

    def explain_text(self, class_: str | int | None = None, feature: int | None = None, *, seed: int = 0,
                     prefix: str = "a picture of", num_tokens: int = 1, init: str = "random", tau: float = 2.0,
                     tau_end: float | None = None, whole_words: bool = True,
                     vocabulary: Sequence[str] | str | None = None, num_samples: int = 10,
                     feature_weight: float = 1.0, callback: Callable | None = None) -> ExplanationResult:
        """A hard prompt (Sec. 4.4): per learnable token a vocabulary distribution through a straight-through Gumbel
        softmax of temperature ``tau`` (annealed to ``tau_end``); ``whole_words`` keeps whole-word tokens,
        ``vocabulary`` (words or a text file) the candidates. ``result.text`` is the explanation ("a picture of
        flower"); the samples come from that text."""
        _check_target(class_, feature)
        check_prompt(self.gen.tokenizer, str(prefix), int(num_tokens), str(init))
        words = vocabulary if vocabulary is None or isinstance(vocabulary, (str, PathLike)) else \
            [str(w) for w in vocabulary]
        with argument_names({"task.vocabulary": "vocabulary"}):  # task=hard_prompt checks it before models load
            ids = vocabulary_ids(self.gen.tokenizer, words)
        if self.text_settings is None:
            self.text_settings = _preset("hard_prompt")
        engine = explainer.PromptExplainer(self.gen, self.sampler, self.text_settings, progress=self.progress)
        with argument_names({"task.tau": "tau", "task.tau_end": "tau_end", "task.vocabulary": "vocabulary",
                             "task.whole_words": "whole_words"}):  # the CLI's config check has the temperatures first
            prompt = engine.hard_prompt(str(prefix), int(num_tokens), str(init), int(seed), float(tau),
                                        bool(whole_words), ids, None if tau_end is None else float(tau_end))
        return self._run(engine, prompt, class_, feature, seed, num_samples, feature_weight, callback)

    def _run(self, engine, prompt, class_, feature, seed, num_samples, feature_weight, callback) -> ExplanationResult:
        f = self.clf
        target = None if class_ is None else resolve_class(class_, f.class_names)
        objective = explainer.explanation_objective(f, target, None if feature is None else int(feature),
                                                    float(feature_weight))
        item = {"class": f.class_names[target] if target is not None else None, "class_index": target,
                "feature": None if feature is None else int(feature), "seed": int(seed)}
        name = " · ".join(str(v) for v in (item["class"], item["feature"]) if v is not None)
        explanation = engine.explain(prompt, objective, int(seed), int(num_samples), f"{name} · seed {seed}",
                                     callback=callback)
        return ExplanationResult(explanation, item, peak_memory_mb(self.gen.device))
