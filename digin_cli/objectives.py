"""The papers' objectives, each a loss to minimise on generated images in [0, 1]: Disagreement (Eq. 3),
ForegroundAwareDistance (Eq. 4), Counterfactual (Eq. 5), FeatureActivation (Eq. 6), NeuronCounterfactual (Sec. 6).

An objective is called as ``objective(images, augment, latents)`` and returns ``(loss, metrics)``: a scalar tensor
and a dict of floats for reporting. ``latents`` are the VAE latents the images were decoded from (for distances in
latent space). With ``augment=True`` the classifier sees random cutouts (training signal); with ``augment=False`` it
sees the plain resized image (evaluation, iterate selection).
"""

from __future__ import annotations

import torch

from digin_cli.augment import Cutouts
from digin_cli.classifiers.base import Classifier


def class_probability(classifier: Classifier, images: torch.Tensor, target: int, cutouts: Cutouts | None
                      ) -> torch.Tensor:
    """Mean predicted probability of ``target`` over the (augmented) views of ``images``."""
    views = cutouts(images, classifier.input_size) if cutouts is not None else images
    return classifier(views).softmax(dim=-1)[:, target].mean()


class Disagreement:
    """Classifier disagreement, paper Eq. 3: maximise p_f(y|x) − p_g(y|x), so the loss is p_g(y|x) − p_f(y|x).

    Computed on probabilities (as the authors' code forces ``loss='conf'`` for two classifiers), with separate random
    cutouts for each classifier.
    """

    def __init__(self, f: Classifier, g: Classifier, target: int, cutouts: Cutouts):
        self.f, self.g, self.target, self.cutouts = f, g, int(target), cutouts

    def __call__(self, images: torch.Tensor, augment: bool = False, latents: torch.Tensor | None = None
                 ) -> tuple[torch.Tensor, dict[str, float]]:
        cut = self.cutouts if augment else None
        p_f = class_probability(self.f, images, self.target, cut)
        p_g = class_probability(self.g, images, self.target, cut)
        loss = p_g - p_f
        return loss, {"p_f": p_f.item(), "p_g": p_g.item(), "loss": loss.item()}


class ForegroundAwareDistance:
    """Foreground-aware distance, paper Eq. 4.

    d(z, x̂) = w_VAE ‖(1 − S_VAE) ⊙ (z − E(x̂))‖² + w_PX ‖(1 − S_PX) ⊙ (D(z) − x̂)‖², with means instead of sums as
    in the authors' code (so the default weights w_VAE = 25, w_PX = 250 keep their meaning). S = 1 marks the
    foreground object.

    ``keep="background"`` (UVCEs, Sec. 5): the object may change freely, the background is held to the original.
    ``keep="foreground"`` (neuron counterfactuals, Sec. 6: "Eq. (4) without inverting the foreground mask"): S
    replaces 1 − S, so changes inside the object cost and the background is free.
    """

    KEEP = ("background", "foreground")

    def __init__(self, original: torch.Tensor, latent_original: torch.Tensor, px_mask: torch.Tensor,
                 latent_mask: torch.Tensor, w_vae: float = 25.0, w_px: float = 250.0, keep: str = "background"):
        if keep not in self.KEEP:
            raise ValueError(f"keep must be one of {self.KEEP}, got {keep!r}")
        self.original, self.latent_original, self.keep = original, latent_original, keep
        if keep == "background":
            self.px_region, self.latent_region = 1 - px_mask, 1 - latent_mask
        else:
            self.px_region, self.latent_region = px_mask, latent_mask
        self.w_vae, self.w_px = float(w_vae), float(w_px)

    def __call__(self, images: torch.Tensor, latents: torch.Tensor | None) -> tuple[torch.Tensor, dict[str, float]]:
        d_px = (self.px_region * (images - self.original) ** 2).mean()
        d_vae = (self.latent_region * (latents - self.latent_original) ** 2).mean() if latents is not None \
            else images.new_zeros(())
        return self.w_vae * d_vae + self.w_px * d_px, {"d_vae": d_vae.item(), "d_px": d_px.item()}


class Counterfactual:
    """Universal visual counterfactual loss, paper Eq. 5: d(z, x̂) − log p_f(y | D(z)) (minimised).

    The classifier term is averaged over random cutouts when ``augment``; the distance always uses the whole image.
    """

    def __init__(self, classifier: Classifier, target: int, distance: ForegroundAwareDistance, cutouts: Cutouts,
                 start: int | None = None):
        self.classifier, self.target, self.distance = classifier, int(target), distance
        self.cutouts, self.start = cutouts, start

    def __call__(self, images: torch.Tensor, augment: bool = False, latents: torch.Tensor | None = None
                 ) -> tuple[torch.Tensor, dict[str, float]]:
        views = self.cutouts(images, self.classifier.input_size) if augment else images
        log_probs = self.classifier(views).log_softmax(dim=-1)
        log_p = log_probs[:, self.target].mean()
        distance, parts = self.distance(images, latents)
        loss = distance - log_p
        metrics = {"loss": loss.item(), "p_target": log_p.exp().item(), "distance": distance.item(), **parts}
        if self.start is not None:
            metrics["p_start"] = log_probs[:, self.start].exp().mean().item()
        return loss, metrics


class FeatureActivation:
    """Neuron activation, paper Eq. 6: maximise (``sign=+1``) or minimise (``sign=-1``) ``φ(D(z)) · v``.

    φ is the classifier's penultimate features (:meth:`Classifier.features`, the input of the linear head). ``v``
    is a one-hot neuron (``direction`` an int n, giving φ_n) or any feature-space direction such as an NPCA
    component (a tensor of length F); ``offset`` is added to the reported value (NPCA's −v·μ_k) and does not change
    the gradient. The loss is ∓ the mean over views (random cutouts when ``augment``, else the plain image) —
    the authors' ``neuron_activation`` / ``neg_neuron_activation``. One ``logits_and_features`` pass also yields
    ``p_class``, the confidence in ``report_class``.
    """

    def __init__(self, classifier: Classifier, direction: int | torch.Tensor, sign: float, cutouts: Cutouts | None,
                 report_class: int | None = None, offset: float = 0.0):
        if sign not in (1, -1):
            raise ValueError(f"sign must be +1 (maximise) or -1 (minimise), got {sign!r}")
        self.classifier, self.sign, self.cutouts = classifier, float(sign), cutouts
        self.report_class, self.offset = report_class, float(offset)
        if isinstance(direction, torch.Tensor):
            self.neuron, self.direction = None, direction.detach().flatten().float()
        else:
            self.neuron, self.direction = int(direction), None

    def value(self, features: torch.Tensor) -> torch.Tensor:
        """φ · v (+ offset) per view."""
        if self.neuron is not None:
            return features[:, self.neuron] + self.offset
        return features @ self.direction.to(features) + self.offset

    def __call__(self, images: torch.Tensor, augment: bool = False, latents: torch.Tensor | None = None
                 ) -> tuple[torch.Tensor, dict[str, float]]:
        views = self.cutouts(images, self.classifier.input_size) if augment and self.cutouts is not None else images
        logits, features = self.classifier.logits_and_features(views)
        phi = self.value(features).mean()
        loss = -self.sign * phi
        metrics = {"loss": loss.item(), "phi": phi.item()}
        if self.report_class is not None:
            metrics["p_class"] = logits.softmax(-1)[:, self.report_class].mean().item()
        return loss, metrics


class NeuronCounterfactual:
    """Neuron counterfactual loss (paper Sec. 6): ∓φ(D(z))·v + d(z, x̂), with d the foreground-aware distance
    holding the object (``keep="foreground"``) so that only the background may change to add or remove the
    feature. Mirrors :class:`Counterfactual`: the activation sees cutouts when ``augment``, the distance always
    the whole image."""

    def __init__(self, activation: FeatureActivation, distance: ForegroundAwareDistance):
        self.activation, self.distance = activation, distance

    def __call__(self, images: torch.Tensor, augment: bool = False, latents: torch.Tensor | None = None
                 ) -> tuple[torch.Tensor, dict[str, float]]:
        act_loss, metrics = self.activation(images, augment, latents)
        distance, parts = self.distance(images, latents)
        loss = act_loss + distance
        return loss, {**metrics, "loss": loss.item(), "distance": distance.item(), **parts}
