"""The papers' objectives, each a loss to minimise on generated images in [0, 1].

An objective is called as ``objective(images, augment)`` and returns ``(loss, metrics)``: a scalar tensor and a dict
of floats for reporting. With ``augment=True`` the classifier sees random cutouts (training signal); with
``augment=False`` it sees the plain resized image (evaluation, iterate selection).
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

    def __call__(self, images: torch.Tensor, augment: bool = False) -> tuple[torch.Tensor, dict[str, float]]:
        cut = self.cutouts if augment else None
        p_f = class_probability(self.f, images, self.target, cut)
        p_g = class_probability(self.g, images, self.target, cut)
        loss = p_g - p_f
        return loss, {"p_f": p_f.item(), "p_g": p_g.item(), "loss": loss.item()}
