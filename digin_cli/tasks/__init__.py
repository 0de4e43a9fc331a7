"""Tasks, one module each; a task is ``run(ctx: RunContext) -> dict`` (the job summary for status.json).

A task module may name the images of an item its report page shows first: ``KEY_IMAGES = ["init.png", ...]``.
"""

from __future__ import annotations

import ast
from importlib import import_module
from importlib.util import find_spec
from pathlib import Path

from digin_cli.errors import DiginError, suggest

TASKS = ("sample", "disagreement", "vce", "neuron", "neuron_cf", "npca", "explain", "hard_prompt", "spurious")


def get_task(name: str):
    if name not in TASKS:
        raise DiginError(f"unknown task '{name}'{suggest(name, TASKS)} — use task={'|'.join(TASKS)}")
    return import_module(f"digin_cli.tasks.{name}").run


def key_images(name: str | None) -> list[str] | None:
    """The images a task names for its report page (``KEY_IMAGES`` in its module); None: the page shows all.

    The list is read from the module's source, not imported: ``digin report`` then needs no torch and starts in a
    second. So ``KEY_IMAGES`` must be a literal list of file names.
    """
    if name not in TASKS:
        return None
    spec = find_spec(f"digin_cli.tasks.{name}")
    tree = ast.parse(Path(spec.origin).read_text("utf-8"))
    for node in tree.body:
        targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(node, ast.AnnAssign) \
            else []
        if any(isinstance(t, ast.Name) and t.id == "KEY_IMAGES" for t in targets) and node.value is not None:
            return [str(name) for name in ast.literal_eval(node.value)]
    return None
