"""Tasks, one module each; a task is ``run(ctx: RunContext) -> dict`` (the job summary for status.json).

A task module may name the images of an item its report page shows first: ``KEY_IMAGES = ["init.png", ...]``.
"""

from __future__ import annotations

from importlib import import_module

from digin_cli.errors import DiginError, suggest

TASKS = ("sample", "disagreement", "vce")


def get_task(name: str):
    if name not in TASKS:
        raise DiginError(f"unknown task '{name}'{suggest(name, TASKS)} — use task={'|'.join(TASKS)}")
    return import_module(f"digin_cli.tasks.{name}").run


def key_images(name: str | None) -> list[str] | None:
    """The images a task names for its report page (``KEY_IMAGES`` in its module); None: the page shows all."""
    if name not in TASKS:
        return None
    return getattr(import_module(f"digin_cli.tasks.{name}"), "KEY_IMAGES", None)
