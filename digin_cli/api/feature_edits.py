"""Feature counterfactuals of real images: raise or lower one feature while the object is held (DiG-IN Sec. 6).

:class:`NeuronCounterfactuals` moves a neuron φ_n (Fig. 10); :class:`NPCA` maximises a class's NPCA component α_l
(Fig. 11, harmful spurious features). Both edit along a :class:`FeatureActivation` with the foreground-aware distance
*without inverting the mask* (``keep="foreground"``: the object is held, the background may change) and identical
prompts, so the attention injection only regularises structure. ``task=neuron_cf`` / ``task=npca`` run their
``edit`` per item.

    ncf = NeuronCounterfactuals(gen, clf, segmenter)
    up = ncf.explain("fox.png", neuron=870, direction="max")
    spur = NPCA(gen, clf, segmenter, components=npca(features, w[k]), class_="great white shark")
    result = spur.maximise("boat.png", component=1)
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from digin_cli import features
from digin_cli.counterfactual import PreparedImage
from digin_cli.data import InputImage
from digin_cli.errors import DiginError
from digin_cli.captioning.object_words import caption_name, mask_words
from digin_cli.api.common import argument_names
from digin_cli.api.real_images import EditSettings, RealImageMethod
from digin_cli.api.edits import EditResult, distances, edit_result
from digin_cli.objectives import FeatureActivation, ForegroundAwareDistance, NeuronCounterfactual

DIRECTIONS = {"max": +1, "min": -1}


@dataclass
class FeatureEditSettings(EditSettings):
    """``conf/task/{neuron_cf,npca}.yaml``'s editing block: the authors' neuron-counterfactual schedule (one
    candidate: injection and foreground blend for the first 30 % of the steps) and no cutouts."""

    injections: tuple[float, ...] = (0.3,)
    blends: tuple[float, ...] = (0.3,)
    cutouts: int = 0
    """Views for the activation term; the authors load the classifier with num_cutouts=0."""


class FeatureEdits(RealImageMethod):
    """What neuron counterfactuals and NPCA share: the image's start class names the caption, the head noun of its
    name (:mod:`.object_words`) or ``mask_words`` makes the object mask, and :meth:`feature_edit` edits."""

    edit_type = FeatureEditSettings

    def _default_cutouts(self, edit, augment):
        from digin_cli.augment import Cutouts

        return Cutouts(num=int(edit.cutouts), power=augment.power, noise_sd=augment.noise_sd)  # as task.cutouts

    def prepared(self, image: InputImage, start: int, words=None) -> tuple[PreparedImage, str]:
        """The image prepared with its start class's caption name; ``words``: the mask words (a string or
        {class: words}; None: the authors' head noun)."""
        name = caption_name(self.clf.class_names, start)
        with argument_names({"task.mask_words": "mask_words"}):  # neuron_cf / npca check theirs before any image
            chosen = mask_words(name, words)
        return self.prepare(image, name, chosen), chosen

    def _start(self, probs: torch.Tensor, start) -> int:
        return int(probs.argmax()) if start is None else self.class_index(start)

    def feature_edit(self, prep: PreparedImage, activation: FeatureActivation, description: str, item: dict,
                     value: str = "phi") -> EditResult:
        """Edit a prepared image along ``activation``; the summary holds the value φ·v (named ``value``: ``phi`` for
        a neuron, ``alpha`` for NPCA), the class confidence before / after, predictions and distances."""
        f, s, inv = self.clf, self.edit_settings, prep.inversion
        distance = ForegroundAwareDistance(inv.original, inv.latent_original, prep.px_mask, prep.latent_mask,
                                           w_vae=s.w_vae, w_px=s.w_px, keep="foreground")
        result, schedule, prompt = self.editor.edit(
            prep, None, NeuronCounterfactual(activation, distance), self.settings, injections=tuple(s.injections),
            blends=tuple(s.blends), description=description, keep="foreground")
        best = result.best.image
        with torch.no_grad():
            before = activation.evaluate(inv.original, None)[1]
            after = activation.evaluate(best.to(self.device), None)[1]
            predicted = [int(f(x.to(self.device)).argmax()) for x in (inv.original, best)]
        original, peak = inv.original.detach().cpu(), self.peak_memory()
        summary = {f"{value}_before": before["phi"], f"{value}_after": after["phi"],
                   "p_class_before": before.get("p_class"), "p_class_after": after.get("p_class"),
                   "predicted_before": f.class_names[predicted[0]], "predicted_after": f.class_names[predicted[1]],
                   "mask_coverage": prep.px_mask.mean().item(),
                   **distances(best, original, prep.px_mask.cpu(), "foreground"),
                   "seconds": round(result.seconds, 2), "peak_memory_mb": round(peak, 1)}
        record = {"caption": prompt, "schedule": schedule.as_dict(), "crop_fraction": s.crop_fraction,
                  "reconstruction_error": inv.reconstruction_error}
        caption = (lambda m: f"phi {m['phi']:.3g}" + (f" p {m['p_class']:.2g}" if "p_class" in m else "")
                   + f"\nd {m['distance']:.3g}")
        return edit_result(prep, result, {**item, **record, "summary": summary}, caption, peak)


class NeuronCounterfactuals(FeatureEdits):
    """Neuron counterfactuals (DiG-IN Sec. 6, Fig. 10): a real image with one feature φ_n raised or lowered."""

    def explain(self, image, neuron: int, direction: str = "max", start=None, report_class=None, mask_words=None,
                seed: int | None = 0) -> EditResult:
        """Raise (``direction="max"``) or lower (``"min"``) feature ``neuron`` of ``image`` (a path, PIL image or
        [0, 1] tensor). ``start`` (default: the prediction) names the object in the caption; ``report_class``
        (default: ``start``) is the class whose confidence is reported."""
        if direction not in DIRECTIONS:
            raise DiginError(f"direction must be 'max' or 'min', got {direction!r} — pass direction='max' or 'min'")
        if not 0 <= int(neuron) < self.clf.num_features:
            raise DiginError(f"neuron {neuron} is out of range: the classifier has {self.clf.num_features} features "
                             f"— pick a neuron in 0..{self.clf.num_features - 1}")
        item, probs = self._read(image, seed)
        start = self._start(probs, start)
        cls = start if report_class is None else self.class_index(report_class)
        return self.edit(item, start, int(neuron), cls, direction, mask_words)

    def edit(self, image: InputImage, start: int, neuron: int, cls: int, direction: str, words=None) -> EditResult:
        f = self.clf
        prep, chosen = self.prepared(image, start, words)
        activation = FeatureActivation(f, neuron, DIRECTIONS[direction], self.cutouts, report_class=cls)
        item = {"image": image.name, "start": f.class_names[start], "mask_words": chosen, "neuron": neuron,
                "class": f.class_names[cls], "direction": direction}
        return self.feature_edit(prep, activation, f"{image.name}: {direction} neuron {neuron}", item)


class NPCA(FeatureEdits):
    """Harmful spurious features (DiG-IN Fig. 11): maximise class ``class_``'s NPCA component in an image of another
    class while its object is held. ``components``: the class's :class:`digin_cli.features.NPCA` (from
    :func:`digin_cli.features.npca` over its images' features, as Neuhaus et al.), made for this classifier."""

    def __init__(self, gen, clf, segmenter=None, components: features.NPCA | None = None, class_=None, **kwargs):
        super().__init__(gen, clf, segmenter, **kwargs)
        if components is None or class_ is None:
            raise DiginError("NPCA needs the class's components and the class — pass components=npca(features, "
                             "w[k]) (digin_cli.features) and class_=<class name or index>")
        self.components, self.class_ = components, self.class_index(class_)

    @classmethod
    def from_parts(cls, clf, preparer, edit, settings, cutouts, components=None, class_=None):
        method = super().from_parts(clf, preparer, edit, settings, cutouts)
        method.components, method.class_ = components, class_
        return method

    def maximise(self, image, component: int, start=None, mask_words=None, seed: int | None = 0) -> EditResult:
        """Maximise component ``component`` (numbered from 0 in variance order, as Neuhaus et al.) in ``image``."""
        item, probs = self._read(image, seed)
        return self.edit(item, self._start(probs, start), component, mask_words)

    def edit(self, image: InputImage, start: int, component: int, words=None) -> EditResult:
        f, k, count = self.clf, self.class_, len(self.components.components)
        if not 0 <= component < count:
            raise DiginError(f"component {component} is out of range: class '{f.class_names[k]}' has {count} "
                             f"components (numbered from 0, as Neuhaus et al.: 0..{count - 1}) — pick a component "
                             f"within 0..{count - 1}")
        direction, offset = self.components.direction(component)
        prep, chosen = self.prepared(image, start, words)
        activation = FeatureActivation(f, direction, +1, self.cutouts, report_class=k, offset=offset)
        item = {"image": image.name, "start": f.class_names[start], "mask_words": chosen, "class": f.class_names[k],
                "component": component}
        result = self.feature_edit(prep, activation, f"{image.name}: NPCA {f.class_names[k]} #{component}", item,
                                   value="alpha")
        result.strip = ("npca.png", f"class {k} NPCA comp. {component} (conf. class {f.class_names[k]}) · "
                                    f"{image.name}", "alpha")
        return result
