"""Universal visual counterfactual explanations (DiG-IN Sec. 5, Eq. 4-5) for any classifier.

Per (image, target class): caption the image ("an image of a <start class> ..."), invert it, swap the start-class
words for the target's, and optimise z_T and per-step deltas to minimise the foreground-aware distance to the
original minus log p_f(target) (:class:`digin_cli.objectives.Counterfactual`). The editing machinery is shared in
:mod:`digin_cli.counterfactual`; this file states what is particular to counterfactuals: which images, which start
and target classes, and the counterfactual metrics and pictures.
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
from digin_cli.objectives import Counterfactual, ForegroundAwareDistance
from digin_cli.tasks.common import finish, require_invertible_sampler, run_items, save_optimisation
from digin_cli.tasks.common.inputs import crop_fraction
from digin_cli.tasks.common.real_images import (distances, overlay, real_image_editor, require_imagenet_val,
                                                select_images, start_class)

KEY_IMAGES = ["original.png", "mask_overlay.png", "init.png", "counterfactual.png"]  # report.html, in this order
ITEM_KEYS = ["images", "indices", "image_classes", "images_per_class", "pairs", "filter_predicted", "targets",
              "target_strategy", "num_targets", "image_list"]  # task keys that only choose items (resume)

STRATEGIES = ("second_most_likely", "nearest_text", "true_label", "wordnet_cluster")
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
    if task.target_strategy not in STRATEGIES and not task.targets:
        raise DiginError(f"unknown task.target_strategy '{task.target_strategy}' — use one of: "
                         f"{', '.join(STRATEGIES)}, or list task.targets")
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
    mask = str(cfg.segmentation.name)
    if mask == "none":  # an ablation, never a silent default (conf/task/vce.yaml selects sam_hq)
        print("digin: warning: segmentation=none — no foreground mask: Eq. 4 becomes a global distance and the "
              "background is not blended; use segmentation=sam_hq (or attention) for the paper's method",
              file=sys.stderr)
    editor = real_image_editor(ctx)  # segmenter once per run, not per image
    settings, cutouts = ctx.optim_settings(), ctx.cutouts()
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
    prepared: dict[str, object] = {}

    def work(item_dir: Path, item: dict) -> dict:
        image, start, target, probs = plan[item["plan"]]
        start_name, target_name = f.class_names[start], f.class_names[target]
        start_words, target_words = readable(start_name), readable(target_name)  # text for captions and prompts
        if prepared.get("key") != (image.content_hash, start):  # one inversion + mask per image, shared by targets
            caption = captioner.caption(image.image, start_words, key=image.content_hash)
            prepared.update(key=(image.content_hash, start), value=editor.prepare(image.image, caption, start_words))
        prep = prepared["value"]
        inv = prep.inversion
        distance = ForegroundAwareDistance(inv.original, inv.latent_original, prep.px_mask, prep.latent_mask,
                                           w_vae=float(task.w_vae), w_px=float(task.w_px))
        objective = Counterfactual(f, target, distance, cutouts, start=start)
        result, schedule, target_prompt = editor.edit(
            prep, target_words, objective, settings, injections=tuple(task.p2p.injections),
            blends=tuple(task.p2p.blends), description=f"{image.name}: {start_name} → {target_name}")
        best = result.best.image
        with torch.no_grad():
            after = f(best.to(ctx.device)).softmax(-1)[0].cpu()
        summary = {"p_start_before": probs[start].item(), "p_target_before": probs[target].item(),
                   "p_start_after": after[start].item(), "p_target_after": after[target].item(),
                   "flipped": int(after.argmax()) == target, "mask": mask,
                   "mask_coverage": prep.px_mask.mean().item(),
                   **distances(best, inv.original.cpu(), 1 - prep.px_mask.cpu(), "background")}
        writer = ctx.writer
        writer.save_image(item_dir, "original.png", inv.original)
        writer.save_image(item_dir, "reconstruction.png", prep.reconstruction)
        writer.save_image(item_dir, "mask_overlay.png", overlay(inv.original, prep.px_mask))
        writer.save_image(item_dir, "mask.png", prep.px_mask[0])  # grey, 1 = object: digin evaluate's regions
        writer.save_image(item_dir, "attention.png", prep.attention.expand(3, -1, -1))
        save_optimisation(ctx, item_dir, result, lambda m: f"p {m['p_target']:.3g} d {m['distance']:.3g}",
                          {**{k: v for k, v in item.items() if k != "plan"}, "caption": prep.source_prompt,
                           "target_prompt": target_prompt, "crop_fraction": crop_fraction(ctx),
                           "schedule": schedule.as_dict(), "reconstruction_error": inv.reconstruction_error,
                           "mask": mask, "attention_maps": prep.attention_info,
                           "summary": summary}, best_name="counterfactual.png")
        return summary

    items = [(ctx.writer.item_dir(image.name, f"{target}_{f.class_names[target]}"),  # names repeat; indices do not
              {"image": image.name, "start": f.class_names[start], "target": f.class_names[target], "plan": n})
             for n, (image, start, target, _) in enumerate(plan)]
    rows = run_items(ctx, items, work, "counterfactuals")
    done = [r for r in rows if "flipped" in r]
    stats = {}
    if done:
        stats["flip_rate"] = sum(bool(r["flipped"]) for r in done) / len(done)
        for key in ("l1", "l2", "l1_background", "l2_background"):
            stats[f"median_{key}"] = float(torch.tensor([float(r[key]) for r in done]).median())
    counts = finish(ctx, [{k: v for k, v in r.items() if k != "plan"} for r in rows],
                    "visual counterfactuals", ["image", "start", "target", "status", "p_target_before",
                                               "p_target_after", "flipped", "l2_background", "mask_coverage"])
    if stats:
        from digin_cli.io.progress import print_table

        print_table("counterfactual summary", [stats])
        ctx.tracker.summary(stats)
    return {**counts, **stats}
