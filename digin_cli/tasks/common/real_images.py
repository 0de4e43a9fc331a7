"""Real images in tasks (vce, neuron_cf, npca): which images, their start class, the editor, distances and
overlays, and feature counterfactuals (neuron_cf, npca)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import torch

from digin_cli.classifiers import Classifier, resolve_class
from digin_cli.context import RunContext
from digin_cli.data import InputImage, load_inputs
from digin_cli.data.images import imagenet_indices_of_classes
from digin_cli.device import peak_memory_mb
from digin_cli.errors import DiginError
from digin_cli.io.progress import track
from digin_cli.tasks.common import require_invertible_sampler, save_optimisation
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


def distances(best: torch.Tensor, original: torch.Tensor, region: torch.Tensor, name: str) -> dict[str, float]:
    """Per-pixel L1 (mean |Δ|) and L2 (root mean square Δ), over the whole image and over ``region`` (1 = counted;
    the background for vce, the object for neuron counterfactuals), the latter as ``l1_<name>`` / ``l2_<name>``."""
    diff = (best.to(original.device) - original).abs()
    region = region.to(original.device).expand_as(diff)
    weight = region.sum().clamp_min(1e-8)
    return {"l1": diff.mean().item(), "l2": diff.pow(2).mean().sqrt().item(),
            f"l1_{name}": (diff * region).sum().item() / weight.item(),
            f"l2_{name}": ((diff.pow(2) * region).sum() / weight).sqrt().item()}


def overlay(image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The image dimmed outside the mask and tinted red inside it."""
    red = torch.tensor([1.0, 0.2, 0.2], device=image.device).view(1, 3, 1, 1)
    return (image * (0.35 + 0.65 * mask) * (1 - 0.35 * mask) + 0.35 * mask * red).clamp(0, 1)


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


def image_preparer(ctx: RunContext, editor) -> Callable:
    """``prepare(image, start_name, words=None)``: caption + inversion + masks of an image (the mask from the
    attention of ``words``, default the whole ``start_name``), computed once and shared by all of the image's items
    (the last image is remembered: items of one image run one after another)."""
    from digin_cli.captioning import build_captioner

    captioner = build_captioner(ctx.cfg.captioner, Path(str(ctx.cfg.paths.cache_dir)), ctx.device)
    memo: dict = {}

    def prepare(image: InputImage, start_name: str, words: str | None = None):
        key = (image.content_hash, start_name, words)
        if memo.get("key") != key:
            caption = captioner.caption(image.image, start_name, key=image.content_hash)
            memo.update(key=key, value=editor.prepare(image.image, caption, words or start_name))
        return memo["value"]

    return prepare


def feature_counterfactual(ctx: RunContext, editor, prep, f: Classifier, activation, item_dir: Path, item: dict,
                           description: str, value: str = "phi") -> dict:
    """Edit a prepared real image along ``activation`` (a :class:`FeatureActivation`) while the foreground-aware
    distance with ``keep="foreground"`` and the foreground blend hold the object (DiG-IN Sec. 6, neuron
    counterfactuals); identical prompts, so the injection only regularises structure. Writes the item's pictures and
    metrics; returns its summary: the value φ·v (named ``value``: ``phi`` for a neuron, ``alpha`` for NPCA) and the
    class confidence before / after, predictions, distances."""
    from digin_cli.objectives import ForegroundAwareDistance, NeuronCounterfactual

    task, inv = ctx.cfg.task, prep.inversion
    distance = ForegroundAwareDistance(inv.original, inv.latent_original, prep.px_mask, prep.latent_mask,
                                       w_vae=float(task.w_vae), w_px=float(task.w_px), keep="foreground")
    result, schedule, prompt = editor.edit(prep, None, NeuronCounterfactual(activation, distance),
                                           ctx.optim_settings(), injections=tuple(task.p2p.injections),
                                           blends=tuple(task.p2p.blends), description=description, keep="foreground")
    best = result.best.image
    with torch.no_grad():
        before = activation.evaluate(inv.original, None)[1]
        after = activation.evaluate(best.to(ctx.device), None)[1]
        predicted = [int(f(x.to(ctx.device)).argmax()) for x in (inv.original, best)]
    summary = {f"{value}_before": before["phi"], f"{value}_after": after["phi"], "p_class_before": before.get("p_class"),
               "p_class_after": after.get("p_class"), "predicted_before": f.class_names[predicted[0]],
               "predicted_after": f.class_names[predicted[1]], "mask_coverage": prep.px_mask.mean().item(),
               **distances(best, inv.original.cpu(), prep.px_mask.cpu(), "foreground"),
               "seconds": round(result.seconds, 2), "peak_memory_mb": round(peak_memory_mb(ctx.device), 1)}
    writer = ctx.writer
    writer.save_image(item_dir, "original.png", inv.original)
    writer.save_image(item_dir, "reconstruction.png", prep.reconstruction)
    writer.save_image(item_dir, "mask_overlay.png", overlay(inv.original, prep.px_mask))
    writer.save_image(item_dir, "mask.png", prep.px_mask[0])  # grey, 1 = object: digin evaluate's regions
    caption = (lambda m: f"phi {m['phi']:.3g}" + (f" p {m['p_class']:.2g}" if "p_class" in m else "")
               + f"\nd {m['distance']:.3g}")
    save_optimisation(ctx, item_dir, result, caption,
                      {**item, "caption": prompt, "schedule": schedule.as_dict(), "crop_fraction": crop_fraction(ctx),
                       "reconstruction_error": inv.reconstruction_error, "summary": summary},
                      best_name="counterfactual.png")
    return summary | ({"error": result.error} if result.error else {})


def before_after_strip(ctx: RunContext, folder: Path, name: str, original_dir: Path | None,
                       edited: list[tuple[str, Path]], title: str, value: str = "phi") -> None:
    """A Fig. 10/11-style strip: the test image, then each edit, captioned with φ·v and the class confidence."""
    from PIL import Image

    def tile(item_dir: Path, key: str, label: str):
        try:
            summary = json.loads((item_dir / "metrics.json").read_text()).get("summary", {})
            image = Image.open(item_dir / ("original.png" if key == "before" else "counterfactual.png"))
        except (OSError, ValueError):
            return None
        p = summary.get(f"p_class_{key}")
        return image.convert("RGB"), f"{label}\n{summary[f'{value}_{key}']:.3g}" + (f" ({p:.2f})" if p is not None
                                                                               else "")

    tiles = [t for t in ([tile(original_dir, "before", "test image")] if original_dir else [])
             + [tile(d, "after", label) for label, d in edited] if t is not None]
    if tiles:
        ctx.writer.save_strip(folder, name, [t for t, _ in tiles], [c for _, c in tiles], title)
