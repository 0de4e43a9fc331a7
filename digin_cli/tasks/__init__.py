"""Tasks, one module each; a task is ``run(ctx: RunContext) -> dict`` (the job summary for status.json).

A task's YAML (``conf/task/<name>.yaml``) names the images of an item its report page shows first
(``meta.key_images``) and the ``task.*`` keys that only choose which items run (``meta.item_keys``): an item's resume
hash ignores them, so adding classes or seeds to a run completes the new items and keeps the finished ones.
"""

from __future__ import annotations

from importlib import import_module

from digin_cli.errors import DiginError, suggest
from digin_cli.task_registry import TASKS, item_keys, key_images  # noqa: F401  (read by run, cli and tests)


def get_task(name: str):
    if name not in TASKS:
        raise DiginError(f"unknown task '{name}'{suggest(name, TASKS)} — use task={'|'.join(TASKS)}")
    return import_module(f"digin_cli.tasks.{name}").run
