"""Universal visual counterfactual explanations (DiG-IN Sec. 5, Eq. 4-5) of one image for any classifier.

Caption the image ("an image of a <start class> ..."), invert it, swap the start-class words for the target's, and
optimise z_T and per-step deltas to minimise the foreground-aware distance to the original minus log p_f(target)
(:class:`digin_cli.objectives.Counterfactual`). ``task=vce`` runs :meth:`Counterfactuals.edit` per item.

    cf = Counterfactuals(gen, clf, segmenter)
    result = cf.explain("fox.png", target="goldfish")
    result.summary["p_target_after"], result.image, result.mask; result.save("out/fox")
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from digin_cli.classifiers import readable
from digin_cli.data import InputImage
from digin_cli.errors import DiginError
from digin_cli.api.real_images import EditSettings, RealImageMethod
from digin_cli.api.edits import EditResult, distances, edit_result
from digin_cli.objectives import Counterfactual, ForegroundAwareDistance


@dataclass
class CounterfactualSettings(EditSettings):
    """``conf/task/vce.yaml``'s editing block: the schedule search over 30/40/50 % injection and no / 30 % background
    blend, as the authors' UVCE command."""


class Counterfactuals(RealImageMethod):
    """Visual counterfactuals of real images (DiG-IN Sec. 5): see the module docstring. ``edit``:
    :class:`CounterfactualSettings`."""

    edit_type = CounterfactualSettings
    captioned = True

    def explain(self, image, target, start=None, seed: int | None = 0) -> EditResult:
        """The counterfactual of ``image`` (a path, PIL image or [0, 1] tensor) toward ``target`` (a class name or
        index), starting from ``start`` (default: the predicted class). ``seed`` seeds cutouts and noise as the CLI
        seeds an item; None keeps the current random state."""
        item, probs = self._read(image, seed)
        start = int(probs.argmax()) if start is None else self.class_index(start)
        target = self.class_index(target)
        if target == start:
            raise DiginError(f"target '{self.clf.class_names[target]}' equals the start class — pick another target "
                             "or start")
        return self.edit(item, start, target, probs)

    def edit(self, image: InputImage, start: int, target: int, probs: torch.Tensor) -> EditResult:
        """Edit a read image from class ``start`` toward ``target``; ``probs`` are its class probabilities."""
        f, s = self.clf, self.edit_settings
        start_name, target_name = f.class_names[start], f.class_names[target]
        start_words, target_words = readable(start_name), readable(target_name)  # text for captions and prompts
        prep = self.prepare(image, start_words)  # one inversion + mask per image, shared by its targets
        inv = prep.inversion
        distance = ForegroundAwareDistance(inv.original, inv.latent_original, prep.px_mask, prep.latent_mask,
                                           w_vae=s.w_vae, w_px=s.w_px)
        objective = Counterfactual(f, target, distance, self.cutouts, start=start)
        result, schedule, target_prompt = self.editor.edit(
            prep, target_words, objective, self.settings, injections=tuple(s.injections), blends=tuple(s.blends),
            description=f"{image.name}: {start_name} → {target_name}")
        best = result.best.image
        with torch.no_grad():
            after = f(best.to(self.device)).softmax(-1)[0].cpu()
        mask = self.segmenter_name
        original = inv.original.detach().cpu()
        summary = {"p_start_before": probs[start].item(), "p_target_before": probs[target].item(),
                   "p_start_after": after[start].item(), "p_target_after": after[target].item(),
                   "flipped": int(after.argmax()) == target, "mask": mask,
                   "mask_coverage": prep.px_mask.mean().item(),
                   **distances(best, original, 1 - prep.px_mask.cpu(), "background")}
        record = {"caption": prep.source_prompt, "target_prompt": target_prompt, "crop_fraction": s.crop_fraction,
                  "schedule": schedule.as_dict(), "reconstruction_error": inv.reconstruction_error, "mask": mask,
                  "attention_maps": prep.attention_info}
        item = {"image": image.name, "start": start_name, "target": target_name}
        return edit_result(prep, result, {**item, **record, "summary": summary},
                           lambda m: f"p {m['p_target']:.3g} d {m['distance']:.3g}", self.peak_memory(),
                           attention=True)
