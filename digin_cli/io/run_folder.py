"""What a run (or sweep) folder holds, read back from disk: its items (key images, strip, numbers, errors), its task
and its jobs. Only files tasks already write are read (item folders with ``metrics.json`` / ``error.log``,
``summary.csv``, ``status.json``, ``config.yaml``), so an old or killed run reads as well as a finished one; the
report pages (:mod:`digin_cli.io.report`) and the W&B table are built from this.
"""

from __future__ import annotations

import csv
import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

SAFETY = "safety.json"  # the safety checker's verdicts on an item's images (digin_cli.safety); flagged ones blur
STRIP = "iterates.png"  # the captioned iterate strip every optimisation task writes (tasks.common.save_optimisation)
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".gif")
_SKIP_DIRS = {".hydra", "wandb"}


@dataclass
class Item:
    """One finished (or failed) item of a run, as the page shows it."""

    name: str
    anchor: str
    status: str
    images: list[tuple[str, str]] = field(default_factory=list)  # (label, relative URL)
    strip: str | None = None
    others: list[tuple[str, str]] = field(default_factory=list)
    fields: dict[str, Any] = field(default_factory=dict)
    error: str = ""
    image_paths: dict[str, Path] = field(default_factory=dict)  # label -> file, for W&B
    flagged: set[str] = field(default_factory=set)  # URLs the safety checker flagged: shown blurred


def natural(text: str) -> list:
    # "seed_10" after "seed_2": numbers compare as numbers.
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", text)]


def url(relative: Path) -> str:
    return "/".join(quote(part, safe="") for part in relative.parts)


def read_json(path: Path) -> dict:
    try:
        value = json.loads(path.read_text("utf-8"))
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def read_csv(path: Path) -> list[dict[str, str]]:
    try:
        with path.open(newline="", encoding="utf-8") as f:
            return list(csv.DictReader(f))
    except (OSError, csv.Error):
        return []


def read_yaml(path: Path) -> Any:
    import yaml  # PyYAML comes with omegaconf; plain safe loading, no interpolation needed

    try:
        return yaml.safe_load(path.read_text("utf-8"))
    except (OSError, yaml.YAMLError):
        return None


def scalar(value: Any) -> bool:
    return value is None or isinstance(value, (str, int, float, bool))


def _last_line(path: Path) -> str:
    try:
        lines = [line for line in path.read_text("utf-8", errors="replace").splitlines() if line.strip()]
    except OSError:
        return ""
    return lines[-1].strip() if lines else ""


def _is_image(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".")


def _item_folders(run_dir: Path) -> list[Path]:
    # One walk that never enters .hydra, wandb (thousands of files) or hidden folders.
    found = []
    for root, dirs, files in os.walk(run_dir):
        dirs[:] = [d for d in dirs if d not in _SKIP_DIRS and not d.startswith(".")]
        if root != str(run_dir) and ("metrics.json" in files or "error.log" in files):
            found.append(Path(root))
    return sorted(found, key=lambda p: natural(p.relative_to(run_dir).as_posix()))


def collect_items(run_dir: Path, key_images: Sequence[str] | None) -> list[Item]:
    """The run's items in natural path order.

    An item is a folder holding ``metrics.json`` (done) or ``error.log`` (failed). Tasks whose items are single
    files (``task=sample``) write no item folders; then every image at the run's top level is an item, with its
    ``summary.csv`` row (matched by file name) as its numbers.
    """
    run_dir = Path(run_dir)
    found = _item_folders(run_dir)
    if found:
        items = [_folder_item(run_dir, folder, n, key_images) for n, folder in enumerate(found)]
    else:
        items = _file_items(run_dir)
    return items + _skipped_items(run_dir, len(items))


def _skipped_items(run_dir: Path, start: int) -> list[Item]:
    """Inputs ``task.skip_unreadable`` left out: summary.csv rows with ``status=skipped`` (no folder of their own)."""
    rows = [r for r in read_csv(run_dir / "summary.csv") if r.get("status") == "skipped"]
    return [Item(name=r.get("image") or r.get("path") or "?", anchor=f"item-{start + n}", status="skipped",
                 fields={"path": r["path"]} if r.get("path") else {}, error=r.get("error") or "")
            for n, r in enumerate(rows)]


def _folder_item(run_dir: Path, folder: Path, n: int, key_images: Sequence[str] | None) -> Item:
    rel = folder.relative_to(run_dir)
    metrics = read_json(folder / "metrics.json")
    done = bool(metrics)
    item = Item(name=" / ".join(rel.parts), anchor=f"item-{n}", status="ok" if done else "failed")
    # The task's own summary numbers first (they are what a reader compares), then the item's other scalars.
    summary = metrics.get("summary")
    fields = {k: v for k, v in summary.items() if scalar(v)} if isinstance(summary, dict) else {}
    fields.update({k: v for k, v in metrics.items() if scalar(v) and k != "error" and k not in fields})
    item.fields = fields
    item.error = str(metrics.get("error") or "") if done else _last_line(folder / "error.log")
    files = sorted((p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")),
                   key=lambda p: natural(p.name))
    names = [p.name for p in files]
    if key_images is None:  # a task that names none: every image of the item, the strip in its own row
        keys = [name for name in names if name != STRIP and _is_image(folder / name)]
    else:
        keys = [name for name in key_images if name in names]
    for name in keys:
        label = Path(name).stem.replace("_", " ")
        item.images.append((label, url(rel / name)))
        item.image_paths[label] = folder / name
    if STRIP in names:
        item.strip = url(rel / STRIP)
        item.image_paths["iterates"] = folder / STRIP
    item.others = [(name, url(rel / name)) for name in names if name not in keys and name != STRIP]
    flagged = read_json(folder / SAFETY).get("flagged") or []
    item.flagged = {url(rel / str(name)) for name in flagged}
    if item.flagged and item.strip:  # the strip shows the iterates around the flagged image: blurred too
        item.flagged.add(item.strip)
    return item


def _file_items(run_dir: Path) -> list[Item]:
    # A failed single-file item leaves "<name>.error.log" where "<name>.png" would be (tasks.common.run_items).
    files = [p for p in run_dir.iterdir() if _is_image(p) or p.name.endswith(".error.log")]
    rows = read_csv(run_dir / "summary.csv")
    items = []
    for n, path in enumerate(sorted(files, key=lambda p: natural(p.name))):
        if path.name.endswith(".error.log"):
            items.append(Item(name=path.name[: -len(".error.log")], anchor=f"item-{n}", status="failed",
                              error=_last_line(path), others=[(path.name, url(Path(path.name)))]))
            continue
        row = next((r for r in rows if path.name in r.values()), {})
        fields = {k: v for k, v in row.items() if v != path.name and k != "status"}
        flagged = read_json(path.with_name(f"{path.name}.{SAFETY}")).get("flagged") or []
        items.append(Item(name=path.name, anchor=f"item-{n}", status=row.get("status") or "ok", fields=fields,
                          images=[(path.stem, url(Path(path.name)))], image_paths={path.stem: path},
                          flagged={url(Path(path.name))} if path.name in flagged else set()))
    return items


def is_run_folder(folder: Path) -> bool:
    return any((folder / name).is_file() for name in ("config.yaml", "status.json"))


def is_sweep_folder(folder: Path) -> bool:
    # Hydra writes multirun.yaml when the sweep starts; sweep_status.csv comes at its end.
    return (folder / "multirun.yaml").is_file() or (folder / "sweep_status.csv").is_file()


def job_folders(sweep_dir: Path) -> list[Path]:
    return sorted((p for p in sweep_dir.iterdir() if p.is_dir() and is_run_folder(p)),
                  key=lambda p: natural(p.name))


def task_of(run_dir: Path) -> str | None:
    """The task a run folder belongs to (status.json, else the resolved config.yaml)."""
    task = read_json(run_dir / "status.json").get("task")
    if task:
        return str(task)
    config = read_yaml(run_dir / "config.yaml")
    try:
        return str(config["task"]["name"])
    except (TypeError, KeyError):
        return None


def key_image_table(run_dir: str | Path, key_images: Sequence[str] | None) -> tuple[list[str], list[list]]:
    """Columns and rows (one per item) of the key images and numbers, image cells as paths: the W&B table."""
    items = collect_items(Path(run_dir), key_images)
    labels: dict[str, None] = {}
    numbers: dict[str, None] = {}
    for item in items:
        labels.update(dict.fromkeys(item.image_paths))
        numbers.update(dict.fromkeys(k for k, v in item.fields.items() if isinstance(v, (int, float))))
    columns = ["item", "status", *labels, *numbers]
    rows = [[item.name, item.status, *(item.image_paths.get(label) for label in labels),
             *(item.fields.get(k) for k in numbers)] for item in items]
    return columns, rows
