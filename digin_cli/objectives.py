"""The papers' objectives, each a loss to minimise on generated images in [0, 1].

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

    def __init__(self, f: Classifier, g: Classifier, target: int, cutouts: Cutouts, target_g: int | None = None):
        # target_g: the same class in g's label set when the two classifiers were trained on different ones.
        self.f, self.g, self.target, self.cutouts = f, g, int(target), cutouts
        self.target_g = self.target if target_g is None else int(target_g)

    def __call__(self, images: torch.Tensor, augment: bool = False, latents: torch.Tensor | None = None
                 ) -> tuple[torch.Tensor, dict[str, float]]:
        cut = self.cutouts if augment else None
        p_f = class_probability(self.f, images, self.target, cut)
        p_g = class_probability(self.g, images, self.target_g, cut)
        loss = p_g - p_f
        return loss, {"p_f": p_f.item(), "p_g": p_g.item(), "loss": loss.item()}


class ForegroundAwareDistance:
    """Foreground-aware distance, paper Eq. 4.

    d(z, x̂) = w_VAE ‖(1 − S_VAE) ⊙ (z − E(x̂))‖² + w_PX ‖(1 − S_PX) ⊙ (D(z) − x̂)‖², with means instead of sums as
    in the authors' code (so the default weights w_VAE = 25, w_PX = 250 keep their meaning). S = 1 marks the
    foreground object, which may change freely; the background is held to the original image.
    """

    def __init__(self, original: torch.Tensor, latent_original: torch.Tensor, px_mask: torch.Tensor,
                 latent_mask: torch.Tensor, w_vae: float = 25.0, w_px: float = 250.0):
        self.original, self.latent_original = original, latent_original
        self.px_background, self.latent_background = 1 - px_mask, 1 - latent_mask
        self.w_vae, self.w_px = float(w_vae), float(w_px)

    def __call__(self, images: torch.Tensor, latents: torch.Tensor | None) -> tuple[torch.Tensor, dict[str, float]]:
        d_px = (self.px_background * (images - self.original) ** 2).mean()
        d_vae = (self.latent_background * (latents - self.latent_original) ** 2).mean() if latents is not None \
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
