"""Neurons in tasks (neuron, neuron_cf, npca, spurious): feature indices, targets, directions and the cached
feature statistics of image folders."""

from __future__ import annotations

from pathlib import Path

import torch

from digin_cli.classifiers import Classifier, resolve_class
from digin_cli.context import RunContext
from digin_cli.data.images import class_image_files, image_files
from digin_cli.errors import DiginError
from digin_cli.tasks.common.inputs import checked_files, crop_fraction


def feature_cache(ctx: RunContext):
    from digin_cli.features import FeatureCache

    return FeatureCache(Path(str(ctx.cfg.paths.cache_dir)) / "features")


def features_of(ctx: RunContext, f: Classifier, files: list[Path], description: str) -> torch.Tensor:
    """Per-image features of ``files`` (cached; streamed in ``task.feature_batch_size`` batches)."""
    from digin_cli.features import classifier_key, image_features

    return image_features(f, files, int(ctx.cfg.generator.resolution), feature_cache(ctx),
                          classifier_key(ctx.cfg.classifier), int(ctx.cfg.task.get("feature_batch_size", 32)),
                          description, crop_fraction(ctx))


def class_files(ctx: RunContext, f: Classifier, label: int) -> list[Path]:
    """Images of class ``label`` in ``paths.imagenet_train``, decode-checked (:func:`checked_files`)."""
    files = class_image_files(ctx.cfg.paths.get("imagenet_train"), label, f.class_names)
    return checked_files(ctx, files, f"paths.imagenet_train, class '{f.class_names[label]}'")


def folder_files(ctx: RunContext, folder, what: str) -> list[Path]:
    """The images of ``folder`` (the ``what`` setting), decode-checked (:func:`checked_files`)."""
    return checked_files(ctx, image_files(folder, what), what)


def check_feature(f: Classifier, n: int, what: str = "task.neurons") -> int:
    """``n`` as a feature index of ``f`` (0 .. num_features - 1), or a one-line error."""
    try:
        n = int(n)
    except (TypeError, ValueError):
        raise DiginError(f"{what} entry {n!r} is not an integer feature index — pass e.g. {what}=[870]") from None
    if not 0 <= n < f.num_features:
        raise DiginError(f"feature {n} is out of range: the classifier has {f.num_features} features "
                         f"(0..{f.num_features - 1}) — pick {what} within 0..{f.num_features - 1}")
    return n


def neuron_targets(ctx: RunContext, f: Classifier) -> list[tuple[int, int | None]]:
    """``(feature, associated class)`` pairs from ``task.neurons`` or ``task.top_features_of`` + ``task.top_k``.

    With ``top_features_of`` the class's Salient ImageNet ranking over its ``paths.imagenet_train`` images is
    written as ``ranking.csv`` and its top k features are the targets. Otherwise the associated class (the one
    whose confidence is reported) is ``task.reference_class`` when set, else the class with the largest head weight
    on the feature, else none (a classifier without a linear head).
    """
    from digin_cli.features import class_feature_ranking

    task = ctx.cfg.task
    if task.get("top_features_of") is not None:
        label = resolve_class(task.top_features_of, f.class_names)
        w, _ = f.head()
        files = class_files(ctx, f, label)
        ranking = class_feature_ranking(features_of(ctx, f, files, f"features of {f.class_names[label]}"), w, label,
                                        int(task.top_k))
        ctx.writer.write_summary([{"class": f.class_names[label], **r} for r in ranking], "ranking.csv")
        return [(r["feature"], label) for r in ranking]
    if not task.neurons:
        raise DiginError("no neuron to visualise — pass task.neurons=[870] or task.top_features_of=<class> "
                         "(with paths.imagenet_train)")
    neurons = [check_feature(f, n) for n in task.neurons]
    if task.get("reference_class") is not None:
        label = resolve_class(task.reference_class, f.class_names)
        return [(n, label) for n in neurons]
    try:
        w, _ = f.head()
    except DiginError:
        return [(n, None) for n in neurons]
    return [(n, int(w[:, n].argmax())) for n in neurons]


def directions(task) -> list[tuple[str, int]]:
    """``task.direction`` (max | min | both: its schema's choices) as (name, sign) pairs."""
    options = {"max": [("max", 1)], "min": [("min", -1)], "both": [("max", 1), ("min", -1)]}
    return options[str(task.direction)]


def object_lister(ctx: RunContext):
    """``task.objects=auto``'s vision-language model: the captioner group's ``model`` (``captioner=objects``:
    Qwen2-VL-2B-Instruct), asked to list the objects of a neuron's top activating training images."""
    from digin_cli.captioning.objects import ObjectLister

    cfg = ctx.cfg.captioner
    if cfg is None or cfg.get("name") == "none" or not cfg.get("model"):
        raise DiginError("task.objects=auto lists the objects of the top activating images with a vision-language "
                         "model, but captioner=none has none — pass captioner=objects (Qwen2-VL-2B-Instruct) or "
                         "captioner=hf captioner.model=<image-text-to-text model>, or task.objects=[...]")
    return ObjectLister(str(cfg.model), max_new_tokens=int(cfg.get("max_new_tokens", 60)),
                        cache_dir=str(ctx.cfg.paths.cache_dir), device=ctx.device)
