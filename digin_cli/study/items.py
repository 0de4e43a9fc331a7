"""The items of a study: finished item folders of a run or sweep, keyed so two runs' items can be matched.

An item is a folder with ``metrics.json`` (tasks.common.run_items writes it last). Its key is "same image, same
target": ``<image> → <target>`` from metrics.json (vce writes both), else its path inside the job folder — which for
vce is ``<image slug>/<target index>_<target slug>`` and so the same thing. A sweep's shards are disjoint, so their
items simply add up; a key found twice in one folder is refused (two runs mixed in one folder).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from digin_cli.errors import DiginError
from digin_cli.io.run_folder import read_json

EXPLANATIONS = ("counterfactual.png", "best.png")  # vce writes the counterfactual under one of these names
ORIGINAL = "original.png"
_SKIP = {".hydra", "wandb"}


@dataclass
class SourceItem:
    key: str
    folder: Path
    start: str = ""
    target: str = ""
    flagged: set[str] = field(default_factory=set)  # files a run-time safety check (safety=true) flagged


def explanation_image(folder: Path) -> Path | None:
    """The item's counterfactual (explanation) image, whichever name the task wrote it under."""
    return next((folder / name for name in EXPLANATIONS if (folder / name).is_file()), None)


def _job_root(folder: Path, top: Path) -> Path:
    # The nearest folder holding a job's config: keys are relative to a job, so a sweep's jobs share key space.
    for parent in folder.parents:
        if (parent / "config.yaml").is_file() or (parent / "status.json").is_file() or parent == top:
            return parent
    return top


def source_items(top: Path) -> dict[str, SourceItem]:
    """Finished items under ``top`` (a run or a sweep folder) that have an explanation image, by key."""
    top = Path(top).expanduser()
    if not top.is_dir():
        raise DiginError(f"no folder '{top}' — pass a run or sweep folder written by digin (e.g. outputs/vce/runs/<run>)")
    found: dict[str, SourceItem] = {}
    for root, dirs, files in os.walk(top):
        dirs[:] = sorted(d for d in dirs if d not in _SKIP and not d.startswith("."))
        folder = Path(root)
        if "metrics.json" not in files or folder == top or explanation_image(folder) is None:
            continue
        metrics = read_json(folder / "metrics.json")
        if not metrics:
            continue
        image, target = metrics.get("image"), metrics.get("target")
        key = (f"{image} → {target}" if isinstance(image, str) and isinstance(target, str)
               else folder.relative_to(_job_root(folder, top)).as_posix())
        if key in found:
            raise DiginError(f"item '{key}' appears twice in {top} ({found[key].folder.relative_to(top)} and "
                             f"{folder.relative_to(top)}) — pass one run (or one sweep of disjoint shards) per side")
        flagged = read_json(folder / "safety.json").get("flagged") or []
        found[key] = SourceItem(key, folder, str(metrics.get("start") or ""), str(target or ""),
                                {str(name) for name in flagged})
    if not found:
        raise DiginError(f"no finished item with a counterfactual image ({' or '.join(EXPLANATIONS)}) in '{top}' — "
                         "pass the folder of a finished vce run or sweep")
    return found


def match(runs: list[dict[str, SourceItem]]) -> tuple[list[str], dict[str, list[str]]]:
    """Keys present in every run (in natural order) and, per run label, the keys left out because another lacks
    them."""
    import re

    def natural(text: str) -> list:
        return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", text)]

    shared = set.intersection(*(set(r) for r in runs))
    labels = "AB"
    unmatched = {labels[n]: sorted(set(r) - shared, key=natural) for n, r in enumerate(runs) if set(r) - shared}
    if not shared:
        raise DiginError("the runs share no item (same image and target) — pass runs of the same images and targets")
    return sorted(shared, key=natural), unmatched
