"""Harmful spurious features (DiG-IN Fig. 11): maximise a class's NPCA component in images of *other* classes.

The components of class k are Neuhaus et al.'s (ref. [54]; :func:`digin_cli.features.npca`: centred PCA of the
contributions W[k] ⊙ φ(x) over the class's images, ordered by variance and numbered from 0 as in their code, so
Fig. 11's "comp. 1" is ``task.component=1``; value α_l(x) = ⟨c(x) − μ_k, v_l⟩ · ⟨v_l, 1⟩). They come from
``paths.imagenet_train`` / ``task.component_images``, or from ``task.component_file``, and belong to the classifier
they were computed for. Each start image is then edited as a neuron counterfactual
(:class:`digin_cli.api.NPCA`, also the Python API) along the feature-space direction of α_l,
keeping the image's own object. If the prediction turns to k while the object stays, the component is a harmful
spurious feature. Reported: prediction, p(k) and α before and after.
"""

from __future__ import annotations

from pathlib import Path

import torch

from digin_cli.classifiers import resolve_class
from digin_cli.context import RunContext
from digin_cli.errors import DiginError
from digin_cli.features import NPCA, npca
from digin_cli.api.feature_edits import NPCA as NPCAMethod
from digin_cli.tasks.common import finish, run_items
from digin_cli.tasks.common.neurons import class_files, features_of, folder_files
from digin_cli.captioning.object_words import caption_name, mask_words
from digin_cli.tasks.common.real_images import (real_image_method, require_editing, require_imagenet_train,
                                                require_imagenet_val, save_edit, select_images, start_class,
                                                task_cutouts)

COMPONENTS = "components.safetensors"


def load_component_file(path: str, f, label: int) -> NPCA:
    """``task.component_file``: a safetensors or tensors-only ``.pt`` file holding ``components`` (L, F) or one
    component (F,), optionally ``mean`` (F,) (what this task writes as ``components.safetensors``)."""
    file = Path(path).expanduser()
    fix = "pass task.component_file=<safetensors or .pt file of components (L, F)>, or leave it unset to compute them"
    if not file.is_file():
        raise DiginError(f"component file not found: {file} — {fix}")
    try:
        if file.suffix == ".safetensors":
            from safetensors.torch import load_file

            tensors = load_file(str(file))
        else:
            tensors = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as err:  # any decoding failure is the user's file
        raise DiginError(f"cannot read component file {file} ({type(err).__name__}: {' '.join(str(err).split())[:120]})"
                         f" — {fix}") from None
    if isinstance(tensors, torch.Tensor):
        tensors = {"components": tensors}
    comps = tensors.get("components") if isinstance(tensors, dict) else None
    if not isinstance(comps, torch.Tensor) or comps.ndim not in (1, 2):
        raise DiginError(f"component file {file} holds no 'components' tensor of shape (L, F) or (F,) — {fix}")
    comps = comps.float().reshape(-1, comps.shape[-1])
    if comps.shape[-1] != f.num_features:
        raise DiginError(f"component file {file} has components of length {comps.shape[-1]} but the classifier has "
                         f"{f.num_features} features — pass a file made for this classifier")
    w, _ = f.head()
    mean = tensors.get("mean", torch.zeros(f.num_features)).float().reshape(-1)
    return NPCA(comps, torch.full((len(comps),), float("nan")), mean, w[label].float().cpu())


def run(ctx: RunContext) -> dict:
    task, cfg = ctx.cfg.task, ctx.cfg
    require_editing(ctx)
    if not task.images:
        require_imagenet_val(cfg.paths.imagenet_val)
    if not task.component_file and not task.component_images:
        require_imagenet_train(cfg.paths.imagenet_train)
    f = ctx.classifier("classifier")
    k = resolve_class(task.component_class, f.class_names)
    if task.component_file:
        comps = load_component_file(str(task.component_file), f, k)
    else:
        w, _ = f.head()
        files = (folder_files(ctx, task.component_images, "task.component_images") if task.component_images
                 else class_files(ctx, f, k))
        comps = npca(features_of(ctx, f, files, f"features of {f.class_names[k]}"), w[k])
        from safetensors.torch import save

        from digin_cli.io.atomic import atomic_write_bytes

        atomic_write_bytes(ctx.output_dir / COMPONENTS, save({"components": comps.components.contiguous(),
                                                             "variances": comps.variances, "mean": comps.mean}))
    component, count = int(task.component), len(comps.components)
    if not 0 <= component < count:
        raise DiginError(f"component {component} is out of range: class '{f.class_names[k]}' has {count} components "
                         f"(numbered from 0, as Neuhaus et al.: 0..{count - 1}) — pick task.component within "
                         f"0..{count - 1}")
    images = select_images(ctx, f)
    with torch.no_grad():
        probs = {id(i): f(i.image.to(ctx.device)).softmax(-1)[0].cpu() for i in images}
    starts = {id(i): start_class(task, f, i, probs[id(i)]) for i in images}
    words = {s: mask_words(caption_name(f.class_names, s), task.get("mask_words")) for s in starts.values()}
    method = real_image_method(ctx, NPCAMethod, f, task_cutouts(ctx), components=comps, class_=k)

    def work(item_dir, item, image):
        result = method.edit(image, starts[id(image)], component, task.get("mask_words"))
        return save_edit(ctx, item_dir, result, error=True)  # result.save draws npca.png after metrics.json

    items = [(ctx.writer.item_dir(image.name),
              {"image": image.name, "start": f.class_names[starts[id(image)]],
               "mask_words": words[starts[id(image)]], "class": f.class_names[k], "component": component}, image)
             for image in images]
    rows = run_items(ctx, items, work, "NPCA components")
    return finish(ctx, rows, f"NPCA comp. {component} of {f.class_names[k]}",
                  ["image", "start", "status", "alpha_before", "alpha_after", "p_class_before", "p_class_after",
                   "predicted_before", "predicted_after", "l2_foreground"])
