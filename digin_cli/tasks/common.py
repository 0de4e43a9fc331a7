"""Pieces several tasks share: the per-item loop with skip/failure handling and result writing; real-image inputs
and their distances / overlays (vce, neuron_cf, npca); neuron targets and feature statistics (neuron, neuron_cf)."""

from __future__ import annotations

import json
import sys
import traceback
from collections.abc import Callable, Iterable
from pathlib import Path

import torch

from digin_cli.classifiers import Classifier, resolve_class
from digin_cli.configs import config_hash
from digin_cli.context import RunContext
from digin_cli.data import InputImage, load_inputs
from digin_cli.data.images import class_image_files, image_files, imagenet_indices_of_classes
from digin_cli.device import item_seed, peak_memory_mb, reset_peak_memory, seed_everything
from digin_cli.errors import DiginError
from digin_cli.io import report
from digin_cli.io.atomic import atomic_write_text
from digin_cli.io.progress import print_table, track
from digin_cli.io.writer import Writer
from digin_cli.optimize import OptimResult
from digin_cli.tasks import item_keys, key_images


def require_invertible_sampler(ctx: RunContext) -> None:
    """Tasks on real images invert them with DDIM (null-text inversion); LCM's noisy steps have no inverse."""
    sampler = ctx.cfg.generator.get("sampler", "ddim")
    if sampler != "ddim":
        raise DiginError(f"task={ctx.cfg.task.name} inverts real images, which needs the deterministic DDIM sampler, "
                         f"not generator.sampler={sampler} — use a DDIM generator (e.g. generator=sd15, or "
                         "generator.sampler=ddim without an LCM LoRA)")


def run_items(ctx: RunContext, items: Iterable[tuple[Path, dict]], work: Callable[[Path, dict], dict],
              description: str, done: Callable[[Path], bool] = Writer.is_done) -> list[dict]:
    """Run ``work(path, item)`` for every item and return one summary row each.

    ``path`` is where the item's outputs go (a folder, or one file for single-file items). Only this job's shard of
    the items runs (:func:`shard`). A finished item (``done(path)``: by default its ``metrics.json`` exists) is read
    back, never redone, if its metrics carry this config's hash, and refused (one line) if not; a failing item is
    recorded as a row with ``status=failed`` and an ``error.log``, and the others still run. User errors (bad input)
    stop the job: they would fail every item the same way.

    Before each item, ``ctx.rng`` (cutouts, noise) and the global RNGs are reseeded from (``seed``, the item's path
    relative to the job folder): an item's result is the same alone, after other items, in a resumed or a sharded
    sweep.
    """
    rows = []
    items = shard(ctx, list(items))
    digest = config_hash(ctx.cfg, item=True, item_keys=item_keys(ctx.cfg.task.get("name")))
    ctx.writer.stamp["config_hash"] = digest  # every item's metrics.json carries it, whichever task writes it
    ctx.tracker.start()  # a task calls run_items once its inputs are checked: only now may a W&B run appear
    for item_dir, item in track(items, description):
        if done(item_dir):
            metrics = _read_metrics(item_dir)
            if metrics is not None and metrics.get("config_hash") != digest:
                raise DiginError(f"{item_dir} holds a result of a different configuration (config hash "
                                 f"{metrics.get('config_hash') or 'missing'}, this one {digest}) — pass a new "
                                 "hydra.sweep.dir= (or hydra.run.dir=) to keep both, or delete that folder")
            rows.append({**item, "status": "done before"} | (metrics or {}).get("summary", {}))
            continue
        reset_peak_memory(ctx.device)
        seed = item_seed(int(ctx.cfg.seed), item_dir.relative_to(ctx.output_dir).as_posix())
        ctx.rng.manual_seed(seed)
        seed_everything(seed)
        try:
            row = work(item_dir, item)
            rows.append({**item, "status": "ok", **row})
        except DiginError:
            raise
        except Exception as err:  # one broken item must not cost the rest of the sweep
            log = item_dir / "error.log" if item_dir.suffix == "" else item_dir.with_suffix(".error.log")
            atomic_write_text(log, traceback.format_exc())
            print(f"digin: item {item_dir.relative_to(ctx.output_dir)} failed: {type(err).__name__}: {err}",
                  file=sys.stderr)
            rows.append({**item, "status": "failed", "error": f"{type(err).__name__}: {err}"})
        ctx.tracker.log({k: v for k, v in rows[-1].items() if isinstance(v, (int, float))})
        _report(ctx)  # a partial page after every item: a killed job still shows what it finished
    return rows


def shard(ctx: RunContext, items: list) -> list:
    """This job's share of ``items`` under ``task.shard_index`` / ``task.num_shards``: every ``num_shards``-th item
    from ``shard_index`` on (the authors' ``index % world_size`` split), so shards are disjoint, balanced, and their
    union is the unsharded list, whatever machine runs which shard."""
    num = int(ctx.cfg.task.get("num_shards", 1) or 1)
    index = int(ctx.cfg.task.get("shard_index", 0) or 0)
    return items[index::num] if num > 1 else items


def _read_metrics(item_dir: Path) -> dict | None:
    try:
        metrics = json.loads((item_dir / "metrics.json").read_text())
    except (OSError, ValueError):
        return None
    return metrics if isinstance(metrics, dict) else None


def save_optimisation(ctx: RunContext, item_dir: Path, result: OptimResult, caption: Callable[[dict], str],
                      metrics: dict) -> None:
    """Write init.png, best.png, the captioned iterate strip and (last, marking the item done) metrics.json."""
    writer = ctx.writer
    writer.save_image(item_dir, "init.png", result.initial.image)
    writer.save_image(item_dir, "best.png", result.best.image)
    kept = [i for i in result.iterates if i.image is not None]  # optimizer.keep_images_every
    writer.save_strip(item_dir, "iterates.png", [i.image for i in kept],
                      [f"it {i.index}{' *' if i.index == result.best_index else ''}\n{caption(i.metrics)}"
                       for i in kept])
    metrics = {**metrics, "best_iterate": result.best_index, "error": result.error,
               "seconds": round(result.seconds, 3), "peak_memory_mb": round(peak_memory_mb(ctx.device), 1),
               "iterates": [{"index": i.index, **i.metrics} for i in result.iterates]}
    ctx.tracker.log_images({f"{item_dir.relative_to(ctx.output_dir)}/best": result.best.image,
                            f"{item_dir.relative_to(ctx.output_dir)}/init": result.initial.image})
    writer.save_metrics(item_dir, metrics)


def finish(ctx: RunContext, rows: list[dict], title: str, columns: list[str] | None = None) -> dict:
    """summary.csv, the end-of-run table and the W&B summary; returns counts for status.json."""
    ctx.writer.write_summary(rows)
    print_table(title, rows, columns)
    counts = {"items": len(rows), "items_failed": sum(r.get("status") == "failed" for r in rows)}
    ctx.tracker.summary(counts)
    if ctx.tracker.enabled:  # report.html's key images, one row per item
        table = lambda: report.key_image_table(ctx.output_dir, key_images(ctx.cfg.task.name))  # noqa: E731
        report.refresh(lambda: ctx.tracker.log_table("key_images", *table()), what="the W&B key_images table")
    return counts


def _report(ctx: RunContext) -> None:
    report.refresh(lambda: report.write_report(ctx.output_dir, key_images(ctx.cfg.task.name)))


# --- real images (vce, neuron_cf, npca) ------------------------------------------------------------------------------


def select_images(ctx: RunContext, f: Classifier) -> list[InputImage]:
    """The images named by ``task.images`` / ``task.indices`` / ``task.image_classes`` (and vce's ``task.pairs``)."""
    task, res = ctx.cfg.task, int(ctx.cfg.generator.resolution)
    imagenet_val = ctx.cfg.paths.imagenet_val
    indices = list(task.indices) if task.indices else None
    classes = list(task.image_classes) + [pair[0] for pair in task.get("pairs", [])]
    if classes:
        if task.images:
            raise DiginError("task.image_classes / task.pairs select ImageNet val images; leave task.images empty")
        labels = [resolve_class(c, f.class_names) for c in classes]
        indices = imagenet_indices_of_classes(imagenet_val, labels, int(task.images_per_class))
    return load_inputs(task.images, res, imagenet_val=imagenet_val, indices=indices, class_names=f.class_names)


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
    """``task.start``: the predicted class, the image's label, or a named class."""
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
                           mask_steps=float(task.mask_steps), max_injection=float(max(task.p2p.injections)))


def require_editing(ctx: RunContext) -> None:
    """Neuron counterfactuals protect the object: they need an active segmenter and a DDIM generator to invert."""
    cfg = ctx.cfg
    if cfg.segmentation.get("name", "none") == "none" or not cfg.segmentation.get("_target_"):
        raise DiginError(f"task={cfg.task.name} keeps the image's object and needs its mask, but segmentation=none "
                         "protects nothing — pass segmentation=sam_hq (or sam / attention; tiny_sam for tests)")
    require_invertible_sampler(ctx)


# --- neurons and feature statistics (neuron, neuron_cf, npca) ------------------------------------------------------


def feature_cache(ctx: RunContext):
    from digin_cli.features import FeatureCache

    return FeatureCache(Path(str(ctx.cfg.paths.cache_dir)) / "features")


def features_of(ctx: RunContext, f: Classifier, files: list[Path], description: str) -> torch.Tensor:
    """Per-image features of ``files`` (cached; streamed in ``task.feature_batch_size`` batches)."""
    from digin_cli.features import classifier_key, image_features

    return image_features(f, files, int(ctx.cfg.generator.resolution), feature_cache(ctx),
                          classifier_key(ctx.cfg.classifier), int(ctx.cfg.task.get("feature_batch_size", 32)),
                          description)


def class_files(ctx: RunContext, f: Classifier, label: int) -> list[Path]:
    """Images of class ``label`` in ``paths.imagenet_train``."""
    return class_image_files(ctx.cfg.paths.get("imagenet_train"), label, f.class_names)


def folder_files(folder, what: str) -> list[Path]:
    return image_files(folder, what)


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
    """``task.direction`` (max | min | both) as (name, sign) pairs."""
    options = {"max": [("max", 1)], "min": [("min", -1)], "both": [("max", 1), ("min", -1)]}
    if str(task.direction) not in options:
        raise DiginError(f"unknown task.direction '{task.direction}' — use task.direction=max, min or both")
    return options[str(task.direction)]


# --- prompt explanations (explain, hard_prompt, spurious) ---------------------------------------------------------


def prompt_explainer(ctx: RunContext):
    """The run's :class:`~digin_cli.explainer.PromptExplainer`; prompt settings are checked with the tokenizer
    alone first, so a bad prefix or init word fails before the generator loads."""
    from digin_cli.explainer import PromptExplainer
    from digin_cli.generation.prompts import check_prompt
    from digin_cli.generation.tokenizer import clip_tokenizer

    task = ctx.cfg.task
    check_prompt(clip_tokenizer(str(ctx.cfg.paths.cache_dir)), str(task.prefix), int(task.num_tokens),
                 str(task.init))
    return PromptExplainer(ctx.generator, ctx.sampler(), ctx.optim_settings())


def explanation_targets(ctx: RunContext, f: Classifier) -> list[dict]:
    """``task.classes`` x ``task.features`` x ``task.seeds`` as items: Eq. 3 (class only), Eq. 4 (feature only) or
    Eq. 5 (both). Unknown classes and out-of-range features fail here, before any optimisation."""
    task = ctx.cfg.task
    classes = [resolve_class(c, f.class_names) for c in task.classes]
    features = [check_feature(f, n, "task.features") for n in task.get("features", [])]
    if not classes and not features:
        raise DiginError("nothing to explain — set task.classes=[bee] and/or task.features=[870]")
    seeds = [int(s) for s in task.seeds]
    if not seeds:
        raise DiginError("task.seeds is empty — give at least one seed, e.g. task.seeds=[0]")
    return [{"class": f.class_names[c] if c is not None else None, "class_index": c, "feature": n, "seed": s}
            for c in (classes or [None]) for n in (features or [None]) for s in seeds]


def explanation_dir(ctx: RunContext, item: dict) -> Path:
    parts = [item["class"] if item["class"] is not None else "no_class"]
    if item["feature"] is not None:
        parts.append(f"feature_{item['feature']}")
    return ctx.writer.item_dir(*parts, f"seed_{item['seed']}")


def wandb_curve(ctx: RunContext, item_dir: Path):
    """Per-iterate callback logging the item's loss curve to W&B (keys prefixed by the item's folder)."""
    key = str(item_dir.relative_to(ctx.output_dir))

    def log(iterate) -> None:
        values = {f"{key}/loss": iterate.loss, f"{key}/iterate": iterate.index}
        if iterate.train_loss is not None:
            values[f"{key}/train_loss"] = iterate.train_loss
        ctx.tracker.log(values)

    return log


def explanation_caption(m: dict) -> str:
    parts = [f"p {m['p_class']:.3g}"] if "p_class" in m else []
    if "phi" in m:
        parts.append(f"phi {m['phi']:.3g}")
    return " · ".join(parts) or f"loss {m['loss']:.3g}"


def save_explanation(ctx: RunContext, item_dir: Path, item: dict, explanation, per_row: int = 5,
                     extra_summary: dict | None = None, extra_metrics: dict | None = None) -> dict:
    """prompt.safetensors, samples.png (confidence / φ under each), loss.png, iterates.png, then metrics.json.

    ``extra_summary`` / ``extra_metrics``: a task's own results about the explanation (e.g. spurious' object
    fractions), stored in the same metrics.json so the item is done only once they are written too."""
    from safetensors.torch import save as safetensors_bytes

    from digin_cli.io.atomic import atomic_save_image, atomic_write_bytes
    from digin_cli.io.plots import line_chart

    writer, result, prompt = ctx.writer, explanation.result, explanation.prompt
    learned = prompt.token_embeddings(sample=False).detach().float().cpu().clone()
    tensors = {"token_embeddings": learned, "input_ids": prompt.input_ids.cpu().contiguous(),
               **{k: v.detach().cpu().contiguous() for k, v in prompt.state_dict().items()}}
    meta = {"prefix": prompt.prefix, "num_tokens": str(prompt.num_tokens), "slots": json.dumps(prompt.slots),
            "kind": type(prompt).__name__, **({"text": explanation.text} if explanation.text is not None else {})}
    atomic_write_bytes(item_dir / "prompt.safetensors", safetensors_bytes(tensors, metadata=meta))
    captions = [explanation_caption(m) for m in explanation.sample_metrics]
    images = list(explanation.samples)
    if images:
        rows = [(images[i:i + per_row], captions[i:i + per_row]) for i in range(0, len(images), per_row)]
        target = " / ".join(str(v) for v in (item.get("class"), item.get("feature")) if v is not None)
        learned = f"{prompt.prefix} + {prompt.num_tokens} learned token(s)".strip()
        title = f"{target}: {explanation.text or learned}"
        writer.save_grid(item_dir, "samples.png", rows, title=title)
    losses = [i.loss for i in result.iterates]
    train = [i.train_loss for i in result.iterates]
    atomic_save_image(item_dir / "loss.png", line_chart({"loss (plain)": losses, "training loss": train},
                                                        title="loss per optimisation step (a new z each step)"))
    kept = [i for i in result.iterates if i.image is not None]
    writer.save_strip(item_dir, "iterates.png", [i.image for i in kept],
                      [f"it {i.index}\n{explanation_caption(i.metrics)}" for i in kept])
    mean = {k: sum(m[k] for m in explanation.sample_metrics) / len(explanation.sample_metrics)
            for k in (explanation.sample_metrics[0] if explanation.sample_metrics else {})}
    summary = {**{f"samples_{k}": v for k, v in mean.items()}, "loss_first": losses[0], "loss_last": losses[-1],
               "seconds": round(result.seconds, 2),
               **({"text": explanation.text} if explanation.text is not None else {}), **(extra_summary or {})}
    metrics = {**item, **(extra_metrics or {}), "summary": summary, "nearest_tokens": prompt.nearest_tokens(5),
               "text": explanation.text, "selected_iterate": result.best_index, "error": result.error,
               "seconds": round(result.seconds, 3), "peak_memory_mb": round(peak_memory_mb(ctx.device), 1),
               "sample_seeds": explanation.sample_seeds, "samples": explanation.sample_metrics,
               "iterates": [{"index": i.index, "train_loss": i.train_loss, **i.metrics} for i in result.iterates]}
    if images:
        ctx.tracker.log_images({f"{item_dir.relative_to(ctx.output_dir)}/samples": images[0]})
    writer.save_metrics(item_dir, metrics)
    return summary | ({"error": result.error} if result.error else {})


# --- feature counterfactuals on real images (neuron_cf, npca) ------------------------------------------------------


def task_cutouts(ctx: RunContext):
    """``task.cutouts`` views for the activation term (0: the plain image, as the authors' neuron counterfactuals),
    with the optimizer's crop power and noise."""
    from digin_cli.augment import Cutouts

    aug = ctx.cfg.optimizer.augment
    return Cutouts(num=int(ctx.cfg.task.cutouts), power=float(aug.power), noise_sd=float(aug.noise_sd))


def image_preparer(ctx: RunContext, editor) -> Callable:
    """``prepare(image, start_name)``: caption + inversion + masks of an image, computed once and shared by all of
    the image's items (the last image is remembered: items of one image run one after another)."""
    from digin_cli.captioning import build_captioner

    captioner = build_captioner(ctx.cfg.captioner, Path(str(ctx.cfg.paths.cache_dir)), ctx.device)
    memo: dict = {}

    def prepare(image: InputImage, start_name: str):
        key = (image.content_hash, start_name)
        if memo.get("key") != key:
            caption = captioner.caption(image.image, start_name, key=image.content_hash)
            memo.update(key=key, value=editor.prepare(image.image, caption, start_name))
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
    writer.save_image(item_dir, "counterfactual.png", best)
    caption = (lambda m: f"phi {m['phi']:.3g}" + (f" p {m['p_class']:.2g}" if "p_class" in m else "")
               + f"\nd {m['distance']:.3g}")
    save_optimisation(ctx, item_dir, result, caption,
                      {**item, "caption": prompt, "schedule": schedule.as_dict(),
                       "reconstruction_error": inv.reconstruction_error, "summary": summary})
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
