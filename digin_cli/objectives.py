"""The papers' objectives, each a loss to minimise on generated images in [0, 1]: Disagreement (Eq. 3),
ForegroundAwareDistance (Eq. 4), Counterfactual (Eq. 5), FeatureActivation (Eq. 6), NeuronCounterfactual (Sec. 6)
of DiG-IN; ClassCrossEntropy (Eq. 3) and ClassFeature (Eq. 5) of DiffExplainer (its Eq. 4 is FeatureActivation).

Contract. An objective is called as ``objective(images, augment, latents)`` and returns ``(loss, metrics)``: a scalar
tensor and a dict of floats for reporting. ``latents`` are the VAE latents the images were decoded from (for
distances in latent space). With ``augment=False`` the classifier sees the plain resized image (evaluation, iterate
selection; :meth:`Objective.evaluate`); with ``augment=True`` the loss is the training loss over random cutouts,
returned in one piece with no metrics (tests, and the loop's single-backward mode).

Chunking (how the optimisation loop runs it). Every training loss here is linear in per-view terms:

    L(x, z) = (1/V) Σ_v ℓ(view_v(x)) + R(x, z)

with V views of each image (random cutouts, or the image itself when there are none) and R a term on the whole
image and latent (the distance of Eq. 4). A subclass of :class:`Objective` states the parts and the loop does the
rest, so the classifier's activations are held for a few views at a time (``optimizer.augment.chunk``):

- ``view_sizes`` — one input size per independent set of views (one per classifier: Disagreement has two, each
  seeing its own cutouts, as the authors' code);
- ``view_losses(views)`` — ℓ for a chunk of views: ``views[s]`` holds set s's views, all sets index-aligned, and
  the result has one loss per view;
- ``image_loss(images, latents)`` — R, or None (the default);
- ``evaluate(images, latents)`` — the plain-image loss and its metrics.

:meth:`Objective.draw` fixes the views of an image once (cutouts + noise) and :meth:`Objective.chunk_loss` returns
the sum of ℓ over a slice of them divided by V, so the chunks add up to the mean whatever the chunk size. A plain
callable with the contract above also works in the loop, without chunking.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from digin_cli.augment import CutoutDraw, Cutouts
from digin_cli.classifiers.base import Classifier


class Objective:
    """Base of the objectives: the training loss as per-view terms plus an image term (see the module docstring)."""

    cutouts: Cutouts | None = None

    @property
    def view_sizes(self) -> Sequence[tuple[int, int]]:
        """Classifier input size of each independent set of views."""
        raise NotImplementedError

    def view_losses(self, views: Sequence[torch.Tensor]) -> torch.Tensor:
        """Per-view losses (N,) of N views; ``views[s]`` is (N, 3, *view_sizes[s]), index-aligned across sets."""
        raise NotImplementedError

    def image_loss(self, images: torch.Tensor, latents: torch.Tensor | None) -> torch.Tensor | None:
        """Loss terms on the whole image and latent (e.g. Eq. 4's distance); None when there are none."""
        return None

    def evaluate(self, images: torch.Tensor, latents: torch.Tensor | None) -> tuple[torch.Tensor, dict[str, float]]:
        """The loss on the plain images and the metrics to report."""
        raise NotImplementedError

    @property
    def num_views(self) -> int:
        """V, the views per image in the training loss."""
        return self.cutouts.num if self.cutouts is not None and self.cutouts.num > 0 else 1

    def draw(self, images: torch.Tensor, generator: torch.Generator | None = None) -> list[CutoutDraw | None]:
        """Fix every view of ``images`` once, one draw per view set (None: the view is the image itself)."""
        if self.cutouts is None or self.cutouts.num <= 0:
            return [None] * len(self.view_sizes)
        hw, batch = tuple(images.shape[-2:]), images.shape[0]
        return [self.cutouts.draw(hw, batch, size, generator) for size in self.view_sizes]

    def chunk_loss(self, images: torch.Tensor, draws: Sequence[CutoutDraw | None], views: slice) -> torch.Tensor:
        """Σ ℓ over the views in ``views`` divided by all views (V · batch): the chunks of a split sum to the mean."""
        rendered = [images if d is None else self.cutouts.apply(images, d, views) for d in draws]
        return self.view_losses(rendered).sum() / (self.num_views * images.shape[0])

    def training_loss(self, images: torch.Tensor, latents: torch.Tensor | None = None,
                      generator: torch.Generator | None = None) -> torch.Tensor:
        """L(x, z) in one piece: all views at once, then the image term."""
        loss = self.chunk_loss(images, self.draw(images, generator), slice(None))
        extra = self.image_loss(images, latents)
        return loss if extra is None else loss + extra

    def __call__(self, images: torch.Tensor, augment: bool = False, latents: torch.Tensor | None = None
                 ) -> tuple[torch.Tensor, dict[str, float]]:
        if augment:
            return self.training_loss(images, latents), {}
        return self.evaluate(images, latents)


def class_probability(classifier: Classifier, images: torch.Tensor, target: int, cutouts: Cutouts | None
                      ) -> torch.Tensor:
    """Mean predicted probability of ``target`` over the (augmented) views of ``images``."""
    views = cutouts(images, classifier.input_size) if cutouts is not None else images
    return classifier(views).softmax(dim=-1)[:, target].mean()


class Disagreement(Objective):
    """Classifier disagreement, paper Eq. 3: maximise p_f(y|x) − p_g(y|x), so the loss is p_g(y|x) − p_f(y|x).

    Computed on probabilities (as the authors' code forces ``loss='conf'`` for two classifiers), with separate random
    cutouts for each classifier: per view, ℓ = p_g(y|view_g) − p_f(y|view_f).
    """

    def __init__(self, f: Classifier, g: Classifier, target: int, cutouts: Cutouts, target_g: int | None = None):
        # target_g: the same class in g's label set when the two classifiers were trained on different ones.
        self.f, self.g, self.target, self.cutouts = f, g, int(target), cutouts
        self.target_g = self.target if target_g is None else int(target_g)

    @property
    def view_sizes(self):
        return [self.f.input_size, self.g.input_size]

    def view_losses(self, views):
        p_f = self.f(views[0]).softmax(dim=-1)[:, self.target]
        p_g = self.g(views[1]).softmax(dim=-1)[:, self.target_g]
        return p_g - p_f

    def evaluate(self, images, latents=None):
        p_f = class_probability(self.f, images, self.target, None)
        p_g = class_probability(self.g, images, self.target_g, None)
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

    def terms(self, images: torch.Tensor, latents: torch.Tensor | None
              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(d, d_VAE, d_PX) as tensors."""
        d_px = (self.px_region * (images - self.original) ** 2).mean()
        d_vae = (self.latent_region * (latents - self.latent_original) ** 2).mean() if latents is not None \
            else images.new_zeros(())
        return self.w_vae * d_vae + self.w_px * d_px, d_vae, d_px

    def __call__(self, images: torch.Tensor, latents: torch.Tensor | None) -> tuple[torch.Tensor, dict[str, float]]:
        d, d_vae, d_px = self.terms(images, latents)
        return d, {"d_vae": d_vae.item(), "d_px": d_px.item()}


class Counterfactual(Objective):
    """Universal visual counterfactual loss, paper Eq. 5: d(z, x̂) − log p_f(y | D(z)) (minimised).

    The classifier term is averaged over random cutouts when ``augment`` (per view ℓ = −log p_f(y|view)); the
    distance always uses the whole image (the image term R).
    """

    def __init__(self, classifier: Classifier, target: int, distance: ForegroundAwareDistance, cutouts: Cutouts,
                 start: int | None = None):
        self.classifier, self.target, self.distance = classifier, int(target), distance
        self.cutouts, self.start = cutouts, start

    @property
    def view_sizes(self):
        return [self.classifier.input_size]

    def view_losses(self, views):
        return -self.classifier(views[0]).log_softmax(dim=-1)[:, self.target]

    def image_loss(self, images, latents):
        return self.distance.terms(images, latents)[0]

    def evaluate(self, images, latents=None):
        log_probs = self.classifier(images).log_softmax(dim=-1)
        log_p = log_probs[:, self.target].mean()
        distance, parts = self.distance(images, latents)
        loss = distance - log_p
        metrics = {"loss": loss.item(), "p_target": log_p.exp().item(), "distance": distance.item(), **parts}
        if self.start is not None:
            metrics["p_start"] = log_probs[:, self.start].exp().mean().item()
        return loss, metrics


class FeatureActivation(Objective):
    """Neuron activation, paper Eq. 6: maximise (``sign=+1``) or minimise (``sign=-1``) ``φ(D(z)) · v``.

    φ is the classifier's penultimate features (:meth:`Classifier.features`, the input of the linear head). ``v``
    is a one-hot neuron (``direction`` an int n, giving φ_n) or any feature-space direction such as an NPCA
    component (a tensor of length F); ``offset`` is added to the reported value (NPCA's −v·μ_k) and does not change
    the gradient. The loss is ∓ the mean over views (random cutouts when ``augment``, else the plain image), per
    view ℓ = ∓φ(view)·v — the authors' ``neuron_activation`` / ``neg_neuron_activation``. One
    ``logits_and_features`` pass also yields ``p_class``, the confidence in ``report_class``.
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

    @property
    def view_sizes(self):
        return [self.classifier.input_size]

    def view_losses(self, views):
        return -self.sign * self.value(self.classifier.features(views[0]))

    def evaluate(self, images, latents=None):
        logits, features = self.classifier.logits_and_features(images)
        phi = self.value(features).mean()
        loss = -self.sign * phi
        metrics = {"loss": loss.item(), "phi": phi.item()}
        if self.report_class is not None:
            metrics["p_class"] = logits.softmax(-1)[:, self.report_class].mean().item()
        return loss, metrics


class NeuronCounterfactual(Objective):
    """Neuron counterfactual loss (paper Sec. 6): ∓φ(D(z))·v + d(z, x̂), with d the foreground-aware distance
    holding the object (``keep="foreground"``) so that only the background may change to add or remove the
    feature. Mirrors :class:`Counterfactual`: the activation term is per view (cutouts when ``augment``), the
    distance is the image term on the whole image."""

    def __init__(self, activation: FeatureActivation, distance: ForegroundAwareDistance):
        self.activation, self.distance, self.cutouts = activation, distance, activation.cutouts

    @property
    def view_sizes(self):
        return self.activation.view_sizes

    def view_losses(self, views):
        return self.activation.view_losses(views)

    def image_loss(self, images, latents):
        return self.distance.terms(images, latents)[0]

    def evaluate(self, images, latents=None):
        act_loss, metrics = self.activation.evaluate(images, latents)
        distance, parts = self.distance(images, latents)
        loss = act_loss + distance
        return loss, {**metrics, "loss": loss.item(), "distance": distance.item(), **parts}


class ClassCrossEntropy(Objective):
    """Class cross-entropy, DiffExplainer Eq. 3: CE(φ(D(ε(z, τ(t)))), c) = −log p_c (minimised).

    Per view ℓ = −log p_c(view) (random cutouts when ``augment`` and ``cutouts`` has any; DiffExplainer names none).
    """

    def __init__(self, classifier: Classifier, target: int, cutouts: Cutouts | None = None):
        self.classifier, self.target, self.cutouts = classifier, int(target), cutouts

    @property
    def view_sizes(self):
        return [self.classifier.input_size]

    def view_losses(self, views):
        return -self.classifier(views[0]).log_softmax(dim=-1)[:, self.target]

    def evaluate(self, images, latents=None):
        log_p = self.classifier(images).log_softmax(dim=-1)[:, self.target].mean()
        return -log_p, {"loss": -log_p.item(), "ce": -log_p.item(), "p_class": log_p.exp().item()}


class ClassFeature(Objective):
    """Class plus feature, DiffExplainer Eq. 5: CE(φ(x), c) − w · φ_f(x) (minimised; the paper's w = 1).

    The sum of :class:`ClassCrossEntropy` (Eq. 3) and ``w`` times :class:`FeatureActivation` (Eq. 4, maximised),
    from one classifier pass per view: the class term keeps the target class present while the feature term asks
    for the feature (the spurious-feature discovery of Sec. 3.3).
    """

    def __init__(self, classifier: Classifier, target: int, feature: int, feature_weight: float = 1.0,
                 cutouts: Cutouts | None = None):
        self.classifier, self.target, self.cutouts = classifier, int(target), cutouts
        self.feature = FeatureActivation(classifier, int(feature), +1, cutouts, report_class=int(target))
        self.feature_weight = float(feature_weight)

    @property
    def view_sizes(self):
        return [self.classifier.input_size]

    def _terms(self, images):
        logits, features = self.classifier.logits_and_features(images)
        ce = -logits.log_softmax(dim=-1)[:, self.target]
        return ce, self.feature.value(features)

    def view_losses(self, views):
        ce, phi = self._terms(views[0])
        return ce - self.feature_weight * phi

    def evaluate(self, images, latents=None):
        ce, phi = (t.mean() for t in self._terms(images))
        loss = ce - self.feature_weight * phi
        return loss, {"loss": loss.item(), "ce": ce.item(), "p_class": (-ce).exp().item(), "phi": phi.item()}
