"""Tasks, one module each; a task is ``run(ctx: RunContext) -> dict`` (the job summary for status.json)."""

from __future__ import annotations

from importlib import import_module

from digin_cli.errors import DiginError, suggest

TASKS = ("sample", "disagreement", "vce", "neuron", "neuron_cf", "npca", "explain", "hard_prompt", "spurious")


def get_task(name: str):
    if name not in TASKS:
        raise DiginError(f"unknown task '{name}'{suggest(name, TASKS)} — use task={'|'.join(TASKS)}")
    return import_module(f"digin_cli.tasks.{name}").run
