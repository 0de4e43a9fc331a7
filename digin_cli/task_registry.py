"""The task names (the files of ``conf/task/``) and each task's metadata, which its YAML states under ``task.meta``:
``key_images`` (the images report.html shows first; null: all) and ``item_keys`` (the ``task.*`` keys that only choose
which items run; an item's resume hash ignores them, so adding classes or seeds to a run completes the new items).

Nothing here imports torch or a task module: ``digin report`` reads a run's metadata from the run's own
``config.yaml`` and starts in a second. Below the tasks: the runner, the CLI and ``tasks.common`` read it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import yaml

TASK_DIR = Path(__file__).resolve().parent.parent / "conf" / "task"
#: Every task: a file ``conf/task/<name>.yaml`` (its fragments live in conf/task/common/) and a module of that name.
TASKS = tuple(sorted(p.stem for p in TASK_DIR.glob("*.yaml")))


def meta(task: Mapping | str | None) -> Mapping:
    """``task.meta`` of a composed task node (a run's config), or of ``conf/task/<name>.yaml`` for a task name."""
    if isinstance(task, str):
        if task not in TASKS:
            return {}
        task = yaml.safe_load((TASK_DIR / f"{task}.yaml").read_text("utf-8"))
    found = task.get("meta") if isinstance(task, Mapping) else None
    return found if isinstance(found, Mapping) else {}


def key_images(task: Mapping | str | Path | None) -> list[str] | None:
    """The images a task names for its report page; None: the page shows all (an unknown task too). A ``Path`` is a
    run folder: :func:`run_key_images`."""
    if isinstance(task, Path):
        return run_key_images(task)
    names = meta(task).get("key_images")
    return None if names is None else [str(n) for n in names]


def item_keys(task: Mapping | str | None) -> list[str]:
    """The ``task.*`` keys that only select a task's items."""
    return [str(k) for k in meta(task).get("item_keys") or []]


def run_key_images(run_dir: str | Path) -> list[str] | None:
    """A run folder's key images, from its ``config.yaml`` (the metadata the run was made with); runs written before
    the metadata moved into the config fall back to their task's current ``conf/task`` file."""
    path = Path(run_dir) / "config.yaml"
    try:
        config = yaml.safe_load(path.read_text("utf-8")) if path.is_file() else None
    except (OSError, yaml.YAMLError):
        config = None
    task = config.get("task") if isinstance(config, Mapping) else None
    if isinstance(task, Mapping):
        return key_images(task if "meta" in task else str(task.get("name")))
    try:  # no readable config: the task status.json names
        status = json.loads((Path(run_dir) / "status.json").read_text("utf-8"))
    except (OSError, ValueError):
        return None
    return key_images(str(status.get("task"))) if isinstance(status, dict) else None
