"""The task names, and what the runner reads from a task module without importing it (so `digin report` needs no
torch): the literal lists ``KEY_IMAGES`` (the images report.html shows first) and ``ITEM_KEYS`` (the ``task.*`` keys
that only choose which items run; an item's resume hash ignores them, so adding classes or seeds to a run completes
the new items). Below the tasks: the runner, the CLI and ``tasks.common`` read it.
"""

from __future__ import annotations

import ast
from importlib.util import find_spec
from pathlib import Path

TASKS = ("sample", "disagreement", "vce", "neuron", "neuron_cf", "npca", "explain", "hard_prompt", "spurious")


def key_images(name: str | None) -> list[str] | None:
    """The images a task names for its report page (``KEY_IMAGES`` in its module); None: the page shows all."""
    return _literal_list(name, "KEY_IMAGES")


def item_keys(name: str | None) -> list[str]:
    """The ``task.*`` keys that only select a task's items (``ITEM_KEYS`` in its module)."""
    return _literal_list(name, "ITEM_KEYS") or []


def _literal_list(name: str | None, attribute: str) -> list[str] | None:
    """A module-level literal list of a task module, read from its source, not imported: ``digin report`` then
    needs no torch and starts in a second."""
    if name not in TASKS:
        return None
    spec = find_spec(f"digin_cli.tasks.{name}")
    tree = ast.parse(Path(spec.origin).read_text("utf-8"))
    for node in tree.body:
        targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(node, ast.AnnAssign) \
            else []
        if any(isinstance(t, ast.Name) and t.id == attribute for t in targets) and node.value is not None:
            return [str(value) for value in ast.literal_eval(node.value)]
    return None
