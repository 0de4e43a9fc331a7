"""Automated core / spurious feature discovery (DiffExplainer Sec. 3.3, Eq. 6).

For each class c and each of its features f_{c,i} (``task.features``, the annotation file's, or the top ``top_k`` of
Salient ImageNet's ranking mean φ_i · W[c, i] over the class's training images):

1. optimise the soft prompt t*_{c,i} on Eq. 5, CE(φ(x), c) − φ_{f_{c,i}}(x), with a new z every step, and
2. sample ``num_samples`` images x_{c,i}(z) from fresh seeds with t* (both explain's machinery,
   :class:`~digin_cli.explainer.PromptExplainer`; steps 1-4 are :class:`digin_cli.api.SpuriousFinder`);
3. segment each with the class name as text (GroundingDINO boxes -> SAM masks, ``segmentation=grounded_sam``);
   r = object pixels / all pixels (0 when nothing is detected);
4. E[r] (the mean over the samples) >= δ -> core, else spurious.

Outputs per item ``<class>/feature_<i>/``: explain's (prompt.safetensors, samples.png, loss.png, iterates.png) plus
the samples and their mask overlays one file each, overlays.png, and metrics.json with r, boxes and scores per sample
and seconds per stage (optimise / sample / segment). Per class:
``<class>/table.csv`` and ``<class>/grid.png`` (one row of overlays per feature). With ``task.annotations``:
``agreement.csv`` (overall, per group column, per derived bias level, at ``task.delta``; and beside the overall row
the held-out agreement of a δ cross-validated over ``task.cv_folds`` folds of classes, mean and spread over folds)
and its table, and ``agreement_by_delta.csv`` (overall agreement for δ = 0, 0.05, ..., 1 from the same r values: an
in-sample analysis of δ, not a result, since every δ is scored on the labels it would be read off).
"""

from __future__ import annotations

import csv
import io
import logging
from pathlib import Path

from PIL import Image

from digin_cli.api.spurious import SpuriousFinder
from digin_cli.classifiers import resolve_class
from digin_cli.context import RunContext
from digin_cli.data.annotations import (Annotations, agreement, agreement_by_delta, check_delta, check_folds,
                                        cross_validated_delta, write_agreement)
from digin_cli.errors import DiginError
from digin_cli.io.atomic import atomic_write_text
from digin_cli.io.progress import print_table, track
from digin_cli.segmentation import build_segmenter
from digin_cli.tasks.common import finish, run_items
from digin_cli.tasks.common.explanations import check_prompt_settings, save_result, wandb_curve
from digin_cli.tasks.common.neurons import check_feature, class_files, features_of

log = logging.getLogger(__name__)
DELTAS = [k / 20 for k in range(21)]  # the δ grid of agreement_by_delta.csv and of the cross-validated choice


def _require_text_segmenter(cfg) -> None:
    """Before any model: the segmentation config must build a text-prompted segmenter (GroundingDINO + SAM)."""
    from hydra.utils import get_class

    target = cfg.get("_target_") if cfg is not None else None
    try:
        text_prompted = bool(target) and getattr(get_class(target), "text_prompted", False)
    except (ImportError, AttributeError, ValueError):  # an unimportable target: build_segmenter reports it
        text_prompted = True
    if not text_prompted:
        raise DiginError(f"task=spurious segments samples with the class name as text, which "
                         f"segmentation={cfg.get('name') if cfg is not None else None} cannot do — use "
                         "segmentation=grounded_sam (or tiny_grounded_sam for a smoke run)")


def _class_features(ctx: RunContext, f, classes: list[int], annotations: Annotations | None
                    ) -> dict[int, list[int]]:
    """The features to test per class: ``task.features``, else the annotation file's, else the top_k ranked."""
    task = ctx.cfg.task
    chosen: dict[int, list[int]] = {}
    for c in classes:
        name = f.class_names[c]
        if task.features:
            features = list(task.features)
        elif annotations is not None and name in annotations.classes():
            features = annotations.features(name)
        else:
            features = [row["feature"] for row in _ranking(ctx, f, c)]
        what = "task.features" if task.features else f"the features of '{name}' in task.annotations"
        features = [check_feature(f, j, what) for j in features]
        chosen[c] = list(dict.fromkeys(features))
    return chosen


def _ranking(ctx: RunContext, f, c: int) -> list[dict]:
    """Salient ImageNet's top_k features of class c from its training images (features cached on disk), also
    written as ``<class>/ranking.csv``."""
    from digin_cli.features import class_feature_ranking

    top_k = int(ctx.cfg.task.top_k)  # >= 1: its schema's range
    weight, _ = f.head()
    name = f.class_names[c]
    features = features_of(ctx, f, class_files(ctx, f, c), f"features of '{name}'")
    ranking = class_feature_ranking(features, weight, c, top_k)
    ctx.writer.write_summary([{"class": name, **r} for r in ranking], f"{ctx.writer.item_dir(name).name}/ranking.csv")
    log.info("top %d features of '%s': %s", top_k, name, [r["feature"] for r in ranking])
    return ranking


def _class_outputs(ctx: RunContext, name: str, rows: list[dict], delta: float,
                   annotated: dict[tuple[str, int], str]) -> None:
    """``<class>/table.csv`` (feature, E[r], label, r per sample) and ``<class>/grid.png`` (overlays per feature)."""
    writer = ctx.writer
    table, grid_rows, titles = [], [], []
    for row in rows:
        if row.get("label") is None:  # a failed item has no r
            continue
        feature = int(row["feature"])
        fractions = list(row["r"])
        entry = {"rank": row.get("rank"), "feature": feature, "E_r": row["E_r"], "label": row["label"],
                 "detected": f"{row['detected']}/{len(fractions)}"}
        note = ""
        if (name, feature) in annotated:
            entry |= {"annotated": annotated[(name, feature)], "agree": annotated[(name, feature)] == row["label"]}
            note = f" (annotated {annotated[(name, feature)]})"
        table.append(entry | {f"r_{k}": round(r, 6) for k, r in enumerate(fractions)})
        folder = writer.item_dir(name, f"feature_{feature}")
        images = [Image.open(folder / f"overlay_{k:02d}.png").convert("RGB") for k in range(len(fractions))]
        grid_rows.append((images, [f"r {r:.3f}" for r in fractions]))
        titles.append(f"feature {feature}: E[r] {row['E_r']:.3f} -> {row['label']}{note}")
    if not table:
        return
    header = list(dict.fromkeys(k for entry in table for k in entry))
    buffer = io.StringIO()
    out = csv.DictWriter(buffer, fieldnames=header, restval="", lineterminator="\n")
    out.writeheader()
    out.writerows(table)
    atomic_write_text(writer.item_dir(name) / "table.csv", buffer.getvalue())
    writer.save_grid(writer.item_dir(name), "grid.png", grid_rows, titles,
                     title=f"{name}: '{name}' segmented in the explanations of its features; core if E[r] >= {delta}")


def run(ctx: RunContext) -> dict:
    task, cfg = ctx.cfg.task, ctx.cfg
    # Everything that needs no model is checked first: a bad input fails in a second and writes nothing.
    delta = check_delta(task.delta)
    folds = check_folds(task.get("cv_folds", 5))
    num_samples = int(task.num_samples)  # >= 1: its schema's range
    _require_text_segmenter(cfg.segmentation)
    if task.annotations:
        Annotations.load(task.annotations)  # the file's structure and labels, before the classifier loads

    f = ctx.classifier("classifier")
    names = f.class_names
    annotations = (Annotations.load(task.annotations, resolve=lambda c: names[resolve_class(c, names)])
                   if task.annotations else None)
    classes = [resolve_class(c, names) for c in task.classes]
    if not classes and annotations is not None:
        classes = [names.index(c) for c in annotations.classes()]
    if not classes:
        raise DiginError("task.classes is empty and no task.annotations file names classes — e.g. "
                         "task.classes='[tench]' or task.annotations=/path/to/annotations.csv")
    features = _class_features(ctx, f, list(dict.fromkeys(classes)), annotations)
    segmenter = build_segmenter(cfg.segmentation, ctx.device)  # loaded once; before the generator: fail fast
    check_prompt_settings(ctx)
    if len(task.seeds) != 1:  # E[r] and the labels aggregate per (class, feature): one stream of z each
        raise DiginError(f"task=spurious takes one seed, got task.seeds={list(task.seeds)} — pass e.g. task.seeds=[0]")
    method = SpuriousFinder(ctx.generator, f, segmenter, ctx.optim_settings(), delta, num_samples, int(task.seeds[0]),
                            float(task.feature_weight), str(task.prefix), int(task.num_tokens), str(task.init),
                            ctx.sampler(), progress=track)

    def work(item_dir: Path, item: dict) -> dict:
        (result,) = method.label(item["class_index"], [item["feature"]], ranks=[item["rank"]],
                                 callback=wandb_curve(ctx, item_dir))
        return save_result(ctx, item_dir, result)

    items = [(ctx.writer.item_dir(names[c], f"feature_{j}"),
              {"class": names[c], "class_index": c, "feature": j, "rank": rank + 1})
             for c, js in features.items() for rank, j in enumerate(js)]
    rows = run_items(ctx, items, work, "core / spurious features")

    annotated = annotations.labels() if annotations is not None else {}
    for c in features:
        _class_outputs(ctx, names[c], [r for r in rows if r["class_index"] == c], delta, annotated)
    counts = finish(ctx, rows, f"core / spurious features (Eq. 6, delta = {delta})",
                    ["class", "feature", "status", "E_r", "label", "detected", "seconds_optimise", "seconds_sample",
                     "seconds_segment"])
    if annotations is not None:
        predicted = {(r["class"], int(r["feature"])): r["label"] for r in rows if r.get("label") in ("core",
                                                                                                     "spurious")}
        table = [row | {"delta": delta} for row in agreement(predicted, annotations)]
        # δ is not given in the paper: the same r values answer every δ. The cross-validated row picks δ on other
        # classes' labels only; agreement_by_delta.csv scores every δ in-sample (an analysis, not a result).
        fractions = {(r["class"], int(r["feature"])): list(r["r"]) for r in rows if r.get("r")}
        cv = cross_validated_delta(fractions, annotations, DELTAS, folds)
        if cv["agreement"] is None:
            log.warning("no cross-validated delta: %s", cv["value"])
        table.insert(1, cv)
        write_agreement(ctx.output_dir / "agreement.csv", table)
        print_table(f"agreement with {Path(task.annotations).name}", table)
        write_agreement(ctx.output_dir / "agreement_by_delta.csv", agreement_by_delta(fractions, annotations, DELTAS))
        counts["agreement"] = table[0]["agreement"]
        counts["agreement_cv"] = cv["agreement"]
        ctx.tracker.summary({"agreement": table[0]["agreement"], "agreement_cv": cv["agreement"]})
    return counts
