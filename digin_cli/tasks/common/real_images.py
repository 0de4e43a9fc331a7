"""Real images in tasks (vce, neuron_cf, npca): which images, their start class, the run's editor and method
(:mod:`digin_cli.api` computes, :func:`save_edit` writes), and the before/after strips."""

from __future__ import annotations

from pathlib import Path

import torch

from digin_cli.classifiers import Classifier, resolve_class
from digin_cli.context import RunContext
from digin_cli.data import InputImage, load_inputs
from digin_cli.data.images import imagenet_indices_of_classes
from digin_cli.errors import DiginError
from digin_cli.io.progress import track
from digin_cli.api.edits import EditResult, before_after_strip
from digin_cli.api.real_images import Preparer
from digin_cli.segmentation.postprocess import overlay  # noqa: F401  (vce, neuron, spurious)
from digin_cli.tasks.common import require_invertible_sampler, save_result
from digin_cli.tasks.common.inputs import crop_fraction, skip_unreadable


def select_images(ctx: RunContext, f: Classifier, indices: list[int] | None = None) -> list[InputImage]:
    """The images named by ``task.images`` / ``task.indices`` / ``task.image_classes`` (and vce's ``task.pairs``);
    ``indices`` (ImageNet val) stand in for ``task.indices`` when a task draws them from elsewhere (vce's list)."""
    task, res = ctx.cfg.task, int(ctx.cfg.generator.resolution)
    imagenet_val = ctx.cfg.paths.imagenet_val
    indices = list(indices) if indices is not None else (list(task.indices) if task.indices else None)
    classes = list(task.image_classes) + [pair[0] for pair in task.get("pairs", [])]
    if classes:
        if task.images:
            raise DiginError("task.image_classes / task.pairs select ImageNet val images; leave task.images empty")
        labels = [resolve_class(c, f.class_names) for c in classes]
        indices = imagenet_indices_of_classes(imagenet_val, labels, int(task.images_per_class))
    images = load_inputs(task.images, res, imagenet_val=imagenet_val, indices=indices, class_names=f.class_names,
                         crop_fraction=crop_fraction(ctx), skip_unreadable=skip_unreadable(ctx), skipped=ctx.skipped)
    if not images:
        raise DiginError(f"none of the {len(ctx.skipped)} selected images can be read (e.g. {ctx.skipped[0][0]}: "
                         f"{ctx.skipped[0][1]}) — pass readable images as task.images")
    return images


def require_imagenet_val(imagenet_val) -> None:
    """Fail in a second, before any model loads, when a run needs ImageNet val and it is not there."""
    if not imagenet_val or not Path(str(imagenet_val)).expanduser().is_dir():
        raise DiginError(f"this run reads ImageNet validation images but paths.imagenet_val is "
                         f"{'unset' if not imagenet_val else repr(str(imagenet_val)) + ' (not a folder)'} — set "
                         "paths.imagenet_val=/path/to/imagenet/val (one subfolder per class; IMAGENET_VAL=... for "
                         "make fig6 / fig8 / fig10 / fig11), or pass task.images=<file or folder>")


def require_imagenet_train(imagenet_train) -> None:
    """Fail before any model loads when class statistics need ImageNet train and it is not there."""
    if not imagenet_train or not Path(str(imagenet_train)).expanduser().is_dir():
        raise DiginError(f"class statistics read ImageNet training images but paths.imagenet_train is "
                         f"{'unset' if not imagenet_train else repr(str(imagenet_train)) + ' (not a folder)'} — set "
                         "paths.imagenet_train=/path/to/imagenet/train (one subfolder per class; IMAGENET_TRAIN=... "
                         "for make fig11)")


def start_class(task, f: Classifier, item: InputImage, probs: torch.Tensor) -> int:
    """``task.start``: ``auto`` (the image's label when it has one, as the authors always keep the labelled class,
    else the prediction), the predicted class, the image's label, or a named class."""
    if task.start == "auto":
        return item.label if item.label is not None else int(probs.argmax())
    if task.start == "predicted":
        return int(probs.argmax())
    if task.start == "label":
        if item.label is None:
            raise DiginError(f"task.start=label but {item.path} has no known label — use task.start=predicted or "
                             "a class name, or ImageNet val images (paths.imagenet_val)")
        return item.label
    return resolve_class(task.start, f.class_names)


def real_image_editor(ctx: RunContext):
    """The run's :class:`RealImageEditor`: segmenter and inversion cache built once; the same cache keys for every
    real-image task, so an image inverted by vce is reused by neuron_cf / npca and back."""
    from digin_cli.counterfactual import RealImageEditor
    from digin_cli.generation.inversion import InversionCache
    from digin_cli.segmentation import build_segmenter

    cfg, task = ctx.cfg, ctx.cfg.task
    sd = ctx.generator
    return RealImageEditor(sd, ctx.sampler(), build_segmenter(cfg.segmentation, ctx.device),
                           InversionCache(Path(str(cfg.paths.cache_dir)) / "inversions"),
                           sd_key=f"{cfg.generator.source}:{cfg.generator.pretrained or cfg.generator.get('seed')}",
                           inner_steps=int(task.inversion.inner_steps), early_stop=float(task.inversion.early_stop),
                           mask_steps=float(task.mask_steps), max_injection=float(max(task.p2p.injections)),
                           progress=track)


def require_editing(ctx: RunContext) -> None:
    """Neuron counterfactuals protect the object: they need an active segmenter and a DDIM generator to invert."""
    cfg = ctx.cfg
    if cfg.segmentation.get("name", "none") == "none" or not cfg.segmentation.get("_target_"):
        raise DiginError(f"task={cfg.task.name} keeps the image's object and needs its mask, but segmentation=none "
                         "protects nothing — pass segmentation=sam_hq (or sam / attention; tiny_sam for tests)")
    require_invertible_sampler(ctx)


def task_cutouts(ctx: RunContext):
    """``task.cutouts`` views for the activation term (0: the plain image, as the authors' neuron counterfactuals),
    with the optimizer's crop power and noise."""
    from digin_cli.augment import Cutouts

    aug = ctx.cfg.optimizer.augment
    return Cutouts(num=int(ctx.cfg.task.cutouts), power=float(aug.power), noise_sd=float(aug.noise_sd))


def image_preparer(ctx: RunContext, editor, captioner=None) -> Preparer:
    """``prepare(image, start_name, words=None)``: caption + inversion + masks of an image, computed once and shared
    by all of the image's items (:class:`digin_cli.api.real_images.Preparer`); ``captioner`` default: the run's."""
    if captioner is None:
        from digin_cli.captioning import build_captioner

        captioner = build_captioner(ctx.cfg.captioner, Path(str(ctx.cfg.paths.cache_dir)), ctx.device)
    return Preparer(editor, captioner)


def real_image_method(ctx: RunContext, cls, f: Classifier, cutouts, captioner=None, **kwargs):
    """config → components → method: the method class ``cls`` over the run's editor (segmenter and inversion cache
    built once), caption cache, optimizer settings and ``cutouts``, with the task's editing settings."""
    editor = real_image_editor(ctx)
    return cls.from_parts(f, image_preparer(ctx, editor, captioner), cls.edit_type.from_task(ctx.cfg.task),
                          ctx.optim_settings(), cutouts, **kwargs)


def save_edit(ctx: RunContext, item_dir: Path, result: EditResult, error: bool = False) -> dict:
    """Write an edit's item folder (``result.save`` through the run's writer, which stamps the config hash) and log
    its images; returns the item's summary row (with the optimisation's ``error``, if any, when ``error``)."""
    save_result(ctx, item_dir, result)
    return result.summary | ({"error": result.error} if error and result.error else {})


def strip(ctx: RunContext, folder: Path, name: str, original_dir: Path | None, edited: list[tuple[str, Path]],
          title: str, value: str = "phi") -> None:
    """A Fig. 10/11-style strip over finished items (:func:`digin_cli.api.edits.before_after_strip`)."""
    before_after_strip(ctx.writer, folder, name, original_dir, edited, title, value)
