"""DiffExplainer explanations (Sec. 3.2 Eq. 3-5, Sec. 4.4), shared by task=explain, task=hard_prompt and
task=spurious: optimise a learnable prompt t so that images generated from it minimise a classifier objective in
expectation over z, then sample the explanation distribution x_t*(z) from fresh seeds.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from digin_cli.augment import Cutouts
from digin_cli.classifiers.base import Classifier
from digin_cli.errors import DiginError
from digin_cli.generation.models import StableDiffusion
from digin_cli.generation.prompts import HardPrompt, SoftPrompt
from digin_cli.generation.sampler import DDIMSampler
from digin_cli.objectives import ClassCrossEntropy, ClassFeature, FeatureActivation, Objective
from digin_cli.optimize import (
    DiginOptimizer,
    Iterate,
    OptimResult,
    OptimSettings,
    Progress,
    PromptVariables,
    stream_seed,
)


def explanation_objective(classifier: Classifier, target: int | None, feature: int | None,
                          feature_weight: float = 1.0, cutouts: Cutouts | None = None) -> Objective:
    """Eq. 3 (a class: −log p_c), Eq. 4 (a feature: maximise φ_f) or Eq. 5 (both: CE − w φ_f)."""
    if feature is not None and not 0 <= int(feature) < classifier.num_features:
        raise DiginError(f"feature index {feature} is out of range: the classifier has {classifier.num_features} "
                         f"penultimate features — use 0..{classifier.num_features - 1}")
    if target is not None and feature is not None:
        return ClassFeature(classifier, target, feature, feature_weight, cutouts)
    if target is not None:
        return ClassCrossEntropy(classifier, target, cutouts)
    if feature is not None:
        return FeatureActivation(classifier, int(feature), +1, cutouts)
    raise DiginError("an explanation needs a class or a feature — set task.classes and/or task.features")


@dataclass
class Explanation:
    result: OptimResult
    prompt: SoftPrompt
    """The learned prompt, restored to the selected iterate."""
    cond: torch.Tensor
    """The final conditioning: the soft prompt's encoding, or the hard prompt's decoded text encoded as text."""
    samples: torch.Tensor
    """``num_samples`` images (N,3,H,W) on CPU from z the optimisation never saw."""
    sample_metrics: list[dict[str, float]]
    sample_seeds: list[int]
    prompt_states: list[dict] | None = None
    """A hard prompt's :meth:`~digin_cli.generation.prompts.HardPrompt.state` per iterate, taken when the iterate
    was rendered (before its optimiser step): the argmax text, top probability, entropy, tau, sampled text."""

    @property
    def text(self) -> str | None:
        return self.prompt.text() if isinstance(self.prompt, HardPrompt) else None


class PromptExplainer:
    """Optimise prompts through a sampler (LCM by default, DDIM for comparison) and sample their explanations.

    Args:
        sd, sampler: the generator and its differentiable sampler.
        settings: the loop's settings (``conf/optimizer/prompt.yaml``: a new z per step, ``select: last``).
        progress: the optimisation's progress bar (DiginOptimizer's ``progress``); None shows nothing.
    """

    def __init__(self, sd: StableDiffusion, sampler: DDIMSampler, settings: OptimSettings,
                 progress: Progress | None = None):
        self.sd, self.sampler, self.settings, self.progress = sd, sampler, settings, progress
        self.null = sd.null_embedding() if sampler.guided else None

    def soft_prompt(self, prefix: str = "", num_tokens: int = 1, init: str = "random", seed: int = 0) -> SoftPrompt:
        return SoftPrompt(self.sd.text_encoder, self.sd.tokenizer, prefix, num_tokens, init, seed)

    def hard_prompt(self, prefix: str = "", num_tokens: int = 1, init: str = "random", seed: int = 0,
                    tau: float = 1.0, whole_words: bool = False, vocabulary: list[int] | None = None,
                    tau_end: float | None = None) -> HardPrompt:
        return HardPrompt(self.sd.text_encoder, self.sd.tokenizer, prefix, num_tokens, init, seed, tau, whole_words,
                          vocabulary, tau_end)

    @torch.no_grad()
    def sample(self, cond: torch.Tensor, seeds: list[int]) -> torch.Tensor:
        """x_t(z) = D(ε(z, τ(t))) for z from each seed (plain sampling, no grad), (N,3,H,W) on CPU."""
        images = []
        for seed in seeds:
            z_T, noise = self.sampler.seeded_start(seed)
            out = self.sampler.sample(z_T, cond, self.null, noise=noise)
            images.append(self.sampler.decode(out.latents).cpu())
        return torch.cat(images)

    def explain(self, prompt: SoftPrompt, objective: Objective, seed: int, num_samples: int = 10,
                description: str = "explaining", callback: Callable[[Iterate], None] | None = None) -> Explanation:
        """Optimise ``prompt`` (Eq. 3-5, z resampled from the stream of ``seed``), then draw ``num_samples``."""
        variables = PromptVariables(prompt, self.sampler, seed, self.settings, self.null)
        states = [] if isinstance(prompt, HardPrompt) else None

        def record(iterate: Iterate) -> None:  # after the iterate's step; prompt_state was taken as it was drawn
            if states is not None:
                states.append(variables.prompt_state)
            if callback is not None:
                callback(iterate)

        optimizer = DiginOptimizer(self.sampler, self.settings, callback=record, progress=self.progress)
        result = optimizer.optimize(variables, objective, description)
        selected = {k.removeprefix("prompt."): v for k, v in result.inputs.items() if k.startswith("prompt.")}
        if selected:
            prompt.load_state_dict(selected)
        with torch.no_grad():
            # A hard prompt's explanation is its text: the final images come from that text, tokenized anew.
            cond = self.sd.encode_prompt(prompt.text()) if isinstance(prompt, HardPrompt) else prompt(sample=False)
        seeds = [stream_seed(seed, j, stream=1) for j in range(int(num_samples))]
        samples = self.sample(cond, seeds) if seeds else torch.empty(0)
        with torch.no_grad():
            metrics = [objective(image[None].to(self.sd.device), False)[1] for image in samples]
        return Explanation(result, prompt, cond, samples, metrics, seeds, states)
