"""``digin evaluate``: per-item metrics of a run's (or sweep's) counterfactuals, then per group of items the set
metrics, written as ``evaluation.json`` (options, groups, items) and ``evaluation.csv`` (one row per group) beside
``summary.csv``.

FID / KID compare the counterfactuals with the originals of the same items, as ACE's ``compute_FID.sh`` (for its
ImageNet pairs, the originals are the real images of both classes). Groups: every item ("all"), per variant of a
sweep, and with ``by_pair`` per unordered class pair (ACE's per-pair tables).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from digin_cli.errors import DiginError
from digin_cli.evaluation import metrics as M
from digin_cli.evaluation.items import CounterfactualItem, collect, counterfactual_image, load_image, load_mask
from digin_cli.io.atomic import atomic_write_json, atomic_write_text

METRICS = ("flip_rate", "closeness", "lpips", "fid", "kid", "split_fid", "cout", "s3", "cost")
DEFAULT_METRICS = tuple(m for m in METRICS if m != "s3")  # S³ needs the user's SimSiam checkpoint
TARGETED = ("flip_rate", "cout")  # need a target class: vce only
CLOSENESS = ("l1", "l2", "l1_background", "l2_background", "l1_foreground", "l2_foreground")
JSON, CSV = "evaluation.json", "evaluation.csv"


@dataclass
class Backbones:
    """Where the models come from. Each field builds its model when first asked (tests pass random-weight ones)."""

    inception: Callable[[], Callable[[torch.Tensor], torch.Tensor]] | None = None
    lpips: Callable[[], torch.nn.Module] | None = None
    simsiam: Callable[[], torch.nn.Module] | None = None
    classifier: Callable[[Path], object] | None = None  # job folder -> the run's classifier (COUT)
    built: dict = field(default_factory=dict)

    def get(self, name: str, *args):
        key = (name, *args)
        if key not in self.built:
            factory = getattr(self, name)
            if factory is None:
                raise DiginError(f"metric needs a {name} model but none is configured — see digin evaluate --help")
            self.built[key] = factory(*args)
        return self.built[key]


def parse_metrics(text: str | None, simsiam: bool) -> list[str]:
    """``a,b,c`` -> metric names (checked); None -> the default set (with s3 when a SimSiam checkpoint is given)."""
    if not text:
        return [*DEFAULT_METRICS, *(["s3"] if simsiam else [])]
    chosen = [m.strip() for m in text.split(",") if m.strip()]
    for m in chosen:
        if m not in METRICS:
            from digin_cli.errors import suggest

            raise DiginError(f"unknown metric '{m}'{suggest(m, METRICS)} — choose from {', '.join(METRICS)}")
    if "s3" in chosen and not simsiam:
        raise DiginError("metric s3 needs a SimSiam checkpoint — pass --simsiam=/path/to/checkpoint_0099.pth.tar "
                         "(facebookresearch/simsiam), or leave s3 out of --metrics")
    return list(dict.fromkeys(chosen))


def _class_index(classifier, name: str | None) -> int | None:
    names = list(classifier.class_names)
    return names.index(name) if name in names else None


def item_row(item: CounterfactualItem, chosen: list[str], backbones: Backbones, device) -> tuple[dict, dict]:
    """The per-item numbers, and the item's Inception features (for the set metrics)."""
    row = {"item": item.key, "job": item.job, "variant": item.variant, "task": item.task, "start": item.start,
           "target": item.target}
    summary = item.summary
    if "flip_rate" in chosen and "flipped" in summary:
        row["flipped"] = bool(summary["flipped"])
    if "closeness" in chosen:
        row.update({k: float(summary[k]) for k in CLOSENESS if isinstance(summary.get(k), (int, float))})
    if "cost" in chosen:
        row.update(seconds=item.cost("seconds"), peak_memory_mb=item.cost("peak_memory_mb"))
    needs_images = {"lpips", "fid", "kid", "split_fid", "cout", "s3"} & set(chosen)
    features = {}
    if not needs_images:
        return row, features
    original = load_image(item.folder / "original.png").to(device)
    counterfactual = load_image(counterfactual_image(item.folder)).to(device)
    if counterfactual.shape != original.shape:
        counterfactual = torch.nn.functional.interpolate(counterfactual, size=original.shape[-2:], mode="bilinear")
    mask = load_mask(item.folder)
    if "lpips" in chosen:
        # vce keeps the background, neuron_cf / npca the object: the region is the kept one, as closeness' own.
        region_name = "background" if item.task == "vce" else "foreground"
        region = None if mask is None else (1 - mask if item.task == "vce" else mask).to(device)
        whole, part = M.lpips_distances(backbones.get("lpips"), original, counterfactual, region)
        row["lpips"] = whole
        if part is not None:
            row[f"lpips_{region_name}"] = part
    if "cout" in chosen and item.task == "vce":
        classifier = backbones.get("classifier", item.job_dir)
        start, target = _class_index(classifier, item.start), _class_index(classifier, item.target)
        if start is not None and target is not None:
            row["cout"] = M.cout(original, counterfactual, classifier, start, target)
    if "s3" in chosen:
        row["s3"] = M.simsiam_similarity(backbones.get("simsiam"), original, counterfactual)
    if {"fid", "kid", "split_fid"} & set(chosen):
        inception = backbones.get("inception")
        pair = inception(torch.cat([original, counterfactual])).double().cpu()
        features = {"original": pair[0], "counterfactual": pair[1]}
    return row, features


def group_row(name: str, rows: list[dict], feats: list[dict], chosen: list[str], seed: int) -> dict:
    """The set metrics of one group of items."""
    out: dict = {"group": name, "n": len(rows)}
    flips = [r["flipped"] for r in rows if "flipped" in r]
    if "flip_rate" in chosen and flips:
        out["flip_rate"] = sum(flips) / len(flips)
    for key in (*CLOSENESS, "lpips", "lpips_background", "lpips_foreground", "cout", "s3", "seconds"):
        mean, median = M.mean_median([r.get(key) for r in rows])
        if mean is not None:
            out[f"{key}_mean"] = mean
            if key in CLOSENESS or key.startswith("lpips"):
                out[f"{key}_median"] = median
    memory = [r["peak_memory_mb"] for r in rows if r.get("peak_memory_mb") is not None]
    if memory:
        out["peak_memory_mb_max"] = max(memory)
    if feats and feats[0]:
        originals = torch.stack([f["original"] for f in feats])
        counterfactuals = torch.stack([f["counterfactual"] for f in feats])
        if "fid" in chosen and len(feats) >= 2:
            out["fid"] = M.frechet_distance(originals, counterfactuals)
        if "kid" in chosen and len(feats) >= 2:
            out["kid_mean"], out["kid_std"] = M.kernel_distance(originals, counterfactuals, seed=seed)
        if "split_fid" in chosen and len(feats) >= 4:  # two items per half at least
            out["split_fid"] = M.split_fid(originals, counterfactuals, seed=seed)
    return out


def evaluate(folder: str | Path, chosen: list[str], backbones: Backbones, device: str | torch.device = "cpu",
             by_pair: bool = False, seed: int = 0) -> dict:
    """Evaluate ``folder`` (a run or a sweep), write evaluation.json / evaluation.csv there; returns the JSON."""
    folder = Path(folder).expanduser()
    items = collect(folder)
    rows, feats = [], []
    for item in items:
        row, feat = item_row(item, chosen, backbones, device)
        rows.append(row)
        feats.append(feat)
    groups: dict[str, list[int]] = {"all": list(range(len(rows)))}
    variants = sorted({r["variant"] for r in rows})
    if len(variants) > 1:
        for v in variants:
            groups[v] = [i for i, r in enumerate(rows) if r["variant"] == v]
    if by_pair:
        for i, r in enumerate(rows):
            if r["start"] and r["target"]:
                pair = " ↔ ".join(sorted((str(r["start"]), str(r["target"]))))
                groups.setdefault(f"{r['variant']} {pair}".strip(), []).append(i)
    table = [group_row(name, [rows[i] for i in idx], [feats[i] for i in idx], chosen, seed)
             for name, idx in groups.items()]
    result = {"folder": str(folder.resolve()), "metrics": chosen, "seed": seed,
              "fid_reference": "originals of the same items (ACE's compute_FID.sh)",
              "split_fid": "ACE's sFID: originals of one random half vs counterfactuals of the other, averaged",
              "groups": table, "items": rows}
    atomic_write_json(folder / JSON, result)
    atomic_write_text(folder / CSV, _csv(table))
    return result


def _csv(table: list[dict]) -> str:
    columns = list(dict.fromkeys(k for row in table for k in row))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(table)
    return buffer.getvalue()
