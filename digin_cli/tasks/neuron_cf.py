"""Neuron counterfactuals (DiG-IN Sec. 6, Fig. 10): a real image with one feature φ_n raised and lowered.

Per (image, neuron, direction): caption the image with its start class (``task.start=auto``: the image's label
when it has one, as the authors, else the prediction), take the object's mask from the attention of the class's
head noun (:mod:`digin_cli.captioning.object_words`, or ``task.mask_words``), invert it (shared with vce's cache), and
optimise ∓φ_n plus the foreground-aware distance *without inverting the mask* (the object is held, the background
may change to add or remove the feature), with identical prompts and the authors' settings: attention injection and
foreground blend for the first 30 % of the steps, no cutouts. The method is
:class:`digin_cli.api.NeuronCounterfactuals` (also the Python API); this file says which images and neurons, and
draws the Fig. 10 strip: test image, maximised, minimised, each with φ_n and the confidence in the associated class.
"""

from __future__ import annotations

import torch

from digin_cli.classifiers import resolve_class
from digin_cli.context import RunContext
from digin_cli.errors import DiginError
from digin_cli.api.feature_edits import NeuronCounterfactuals
from digin_cli.tasks.common import finish, run_items
from digin_cli.tasks.common.neurons import check_feature, directions, neuron_targets
from digin_cli.captioning.object_words import caption_name, mask_words
from digin_cli.tasks.common.real_images import (real_image_method, require_editing,
                                                require_imagenet_val, save_edit, select_images, start_class, strip,
                                                task_cutouts)


def run(ctx: RunContext) -> dict:
    task, cfg = ctx.cfg.task, ctx.cfg
    require_editing(ctx)
    if not task.images:
        require_imagenet_val(cfg.paths.imagenet_val)  # before any model is loaded
    signs = directions(task)
    f = ctx.classifier("classifier")
    for pair in task.pairs:
        if len(pair) != 2:
            raise DiginError(f"task.pairs entries are [image class, neuron], got {list(pair)}")
    pairs = [(resolve_class(c, f.class_names), check_feature(f, n, "task.pairs")) for c, n in task.pairs]
    targets = None if pairs else neuron_targets(ctx, f)
    images = select_images(ctx, f)
    with torch.no_grad():
        probs = {id(i): f(i.image.to(ctx.device)).softmax(-1)[0].cpu() for i in images}
    plan = []
    for image in images:
        start = start_class(task, f, image, probs[id(image)])
        # The associated class: the pair's class, the neuron's (ranking / reference / largest weight), or the start.
        neurons = ([(n, c) for c, n in pairs if c == image.label] if pairs
                   else [(n, label if label is not None else start) for n, label in targets])
        plan += [(image, start, n, c, name, sign) for n, c in neurons for name, sign in signs]
    names = {start: caption_name(f.class_names, start) for _, start, *_ in plan}
    words = {start: mask_words(name, task.get("mask_words")) for start, name in names.items()}  # checked up front
    if not plan:
        raise DiginError("no selected image belongs to a task.pairs class — select images of those classes "
                         "(ImageNet val with labels) or pass task.neurons")
    method = real_image_method(ctx, NeuronCounterfactuals, f, task_cutouts(ctx))

    def work(item_dir, item, edit):
        image, start, n, cls, name, _ = edit
        return save_edit(ctx, item_dir, method.edit(image, start, n, cls, name, task.get("mask_words")), error=True)

    items = [(ctx.writer.item_dir(image.name, f"neuron_{n}", name),
              {"image": image.name, "start": f.class_names[start], "mask_words": words[start], "neuron": n,
               "class": f.class_names[cls], "direction": name}, edit)
             for edit in plan for image, start, n, cls, name, _ in [edit]]
    rows = run_items(ctx, items, work, "neuron counterfactuals")
    for image, n, cls in dict.fromkeys((image, n, cls) for image, _, n, cls, _, _ in plan):
        folder = ctx.writer.item_dir(image.name, f"neuron_{n}")
        edits = [(f"{'maximise' if name == 'max' else 'minimise'} {n}", folder / name) for name, _ in signs]
        strip(ctx, folder, "neuron_cf.png", edits[0][1], edits,
                           f"neuron {n} (conf. class {f.class_names[cls]}) · {image.name}")
    return finish(ctx, rows, "neuron counterfactuals",
                  ["image", "neuron", "class", "direction", "status", "phi_before", "phi_after", "p_class_before",
                   "p_class_after", "l2_foreground", "l2"])
