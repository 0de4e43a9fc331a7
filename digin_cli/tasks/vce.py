"""Universal visual counterfactual explanations (DiG-IN Sec. 5, Eq. 4-5) for any classifier.

Per (image, target class): caption the image ("an image of a <start class> ..."), invert it, swap the start-class
words for the target's, and optimise z_T and per-step deltas to minimise the foreground-aware distance to the
original minus log p_f(target) (:class:`digin_cli.objectives.Counterfactual`). The method is
:class:`digin_cli.api.Counterfactuals` (also the Python API); this file states which images, which start and
target classes, and writes each result and the run's summary.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from digin_cli.captioning import build_captioner
from digin_cli.classifiers import Classifier, readable, resolve_class
from digin_cli.context import RunContext
from digin_cli.data import InputImage
from digin_cli.data.authors import IMAGENET_CLASSES, uvce_image_list, wordnet_cluster
from digin_cli.errors import DiginError
from digin_cli.api.counterfactuals import Counterfactuals
from digin_cli.tasks.common import finish, require_invertible_sampler, run_items
from digin_cli.tasks.common.real_images import (real_image_method, require_imagenet_val, save_edit, select_images,
                                                start_class)


IMAGE_LISTS = ("dig_in",)


def _listed(task) -> dict[int, tuple[int, int | None]] | None:
    """``task.image_list=dig_in``: the authors' UVCE list as {val index: (start class, target or None)}."""
    if not task.get("image_list"):
        return None
    if task.image_list not in IMAGE_LISTS:
        raise DiginError(f"unknown task.image_list '{task.image_list}' — use task.image_list=dig_in (the authors' "
                         "ImageNet UVCE images) or null")
    if task.images or task.indices or task.image_classes or task.pairs:
        raise DiginError("task.image_list=dig_in chooses the images itself — leave task.images, task.indices, "
                         "task.image_classes and task.pairs empty")
    return {idx: (start, target) for idx, start, target in uvce_image_list()}


def nearest_text_classes(ctx: RunContext, names: list[str]) -> torch.Tensor:
    """Cosine similarities between class names in the generator's CLIP text space: "close classes" for any label
    set (``wordnet_cluster`` is the authors' own ImageNet groups)."""
    sd = ctx.generator
    with torch.no_grad():
        embeds = torch.cat([sd.encode_prompt([f"a photograph of a {readable(n)}" for n in names[i:i + 64]]).mean(1)
                            for i in range(0, len(names), 64)])
    embeds = torch.nn.functional.normalize(embeds, dim=-1)
    return embeds @ embeds.T


def targets_for(ctx: RunContext, f: Classifier, item: InputImage, start: int, probs: torch.Tensor,
                text_sims, listed: tuple[int, int | None] | None = None) -> list[int]:
    task = ctx.cfg.task
    paired = [resolve_class(b, f.class_names) for a, b in task.pairs
              if item.label is not None and resolve_class(a, f.class_names) == item.label]
    if paired:
        targets = paired
    elif task.targets:
        targets = [resolve_class(t, f.class_names) for t in task.targets]
    elif listed is not None and listed[1] is not None:  # the authors' list names this image's target
        targets = [listed[1]]
    elif task.target_strategy == "wordnet_cluster":  # the authors' targets: the other classes of the start's group
        cluster = wordnet_cluster(start)
        if cluster is None:  # as the authors: an image whose class is in no group is skipped
            print(f"digin: warning: {item.path.name}: start class '{f.class_names[start]}' is in none of the authors' "
                  "WordNet clusters; skipped", file=sys.stderr)
            return []
        targets = cluster[1]
    elif task.target_strategy == "true_label":
        if item.label is None:
            raise DiginError("task.target_strategy=true_label needs labelled images (paths.imagenet_val)")
        targets = [item.label]
    else:
        scores = probs.clone() if task.target_strategy == "second_most_likely" else text_sims()[start].clone()
        scores[start] = -float("inf")
        targets = scores.topk(int(task.num_targets)).indices.tolist()
    # The authors' error visualisation: a misclassified image explained toward its own label (start = target).
    misclassified = task.start == "label" and int(probs.argmax()) != start
    for t in targets:
        if t == start and not misclassified:
            raise DiginError(f"target '{f.class_names[t]}' equals the start class of {item.path.name} — pick "
                             "another task.targets class or task.start")
    return targets


def run(ctx: RunContext) -> dict:
    task, cfg = ctx.cfg.task, ctx.cfg
    require_invertible_sampler(ctx)
    listed = _listed(task)
    if not task.images:
        require_imagenet_val(cfg.paths.imagenet_val)  # before any model is loaded: fail in a second, not minutes
    for pair in task.pairs:
        if len(pair) != 2:
            raise DiginError(f"task.pairs entries are [image class, target class], got {list(pair)}")
    # Built before the big models: a captioning model missing offline fails in a second (only its config is read).
    captioner = build_captioner(cfg.captioner, Path(str(cfg.paths.cache_dir)), ctx.device)
    if str(cfg.captioner.get("name", "none")) == "none":
        print("digin: warning: captioner=none — the caption is only the template (\"an image of a <class>\"), an "
              "ablation; the paper inverts a caption of the image (conf/task/vce.yaml selects captioner=hf)",
              file=sys.stderr)
    f = ctx.classifier("classifier")
    if (listed is not None or task.target_strategy == "wordnet_cluster" and not task.targets) and \
            len(f.class_names) != IMAGENET_CLASSES:
        raise DiginError(f"the authors' image list and WordNet clusters are in ImageNet-1k classes, but the classifier "
                         f"has {len(f.class_names)} — use an ImageNet classifier, or task.targets / another "
                         "task.target_strategy")
    for name in task.targets:  # unknown names fail before any image is read
        resolve_class(name, f.class_names)
    if task.start not in ("predicted", "label"):
        resolve_class(task.start, f.class_names)
    images = select_images(ctx, f, sorted(listed) if listed is not None else None)
    with torch.no_grad():  # one classifier pass per image serves the filter, the start class and the targets
        probs_of = {id(i): f(i.image.to(ctx.device)).softmax(-1)[0].cpu() for i in images}
    if task.filter_predicted is not None:
        keep = resolve_class(task.filter_predicted, f.class_names)
        images = [i for i in images if int(probs_of[id(i)].argmax()) == keep]
        if not images:
            raise DiginError(f"no selected image is predicted as '{f.class_names[keep]}' — relax "
                             "task.filter_predicted or select more images")
    if str(cfg.segmentation.name) == "none":  # an ablation, never a silent default (conf/task/vce.yaml selects sam_hq)
        print("digin: warning: segmentation=none — no foreground mask: Eq. 4 becomes a global distance and the "
              "background is not blended; use segmentation=sam_hq (or attention) for the paper's method",
              file=sys.stderr)
    method = real_image_method(ctx, Counterfactuals, f, ctx.cutouts(), captioner)  # segmenter once per run
    sims_cache: dict = {}

    def text_sims():
        if "sims" not in sims_cache:
            sims_cache["sims"] = nearest_text_classes(ctx, f.class_names)
        return sims_cache["sims"]

    plan = []
    for image in images:
        probs = probs_of[id(image)]
        entry = listed.get(image.index) if listed is not None else None
        start = entry[0] if entry is not None else start_class(task, f, image, probs)  # the list's start class
        for target in targets_for(ctx, f, image, start, probs, text_sims, entry):
            plan.append((image, start, target, probs))
    if not plan:
        raise DiginError("no selected image has a target: their start classes are in none of the authors' WordNet "
                         "clusters — pass task.targets or another task.target_strategy")

    def work(item_dir: Path, item: dict, edit: tuple) -> dict:
        return save_edit(ctx, item_dir, method.edit(*edit))

    items = [(ctx.writer.item_dir(image.name, f"{target}_{f.class_names[target]}"),  # names repeat; indices do not
              {"image": image.name, "start": f.class_names[start], "target": f.class_names[target]},
              (image, start, target, probs))
             for image, start, target, probs in plan]
    rows = run_items(ctx, items, work, "counterfactuals")
    done = [r for r in rows if "flipped" in r]
    stats = {}
    if done:
        stats["flip_rate"] = sum(bool(r["flipped"]) for r in done) / len(done)
        for key in ("l1", "l2", "l1_background", "l2_background"):
            stats[f"median_{key}"] = float(torch.tensor([float(r[key]) for r in done]).median())
    counts = finish(ctx, rows, "visual counterfactuals", ["image", "start", "target", "status", "p_target_before",
                                                          "p_target_after", "flipped", "l2_background",
                                                          "mask_coverage"])
    if stats:
        from digin_cli.io.progress import print_table

        print_table("counterfactual summary", [stats])
        ctx.tracker.summary(stats)
    return {**counts, **stats}
