"""digin: investigate image classifiers by optimising Stable Diffusion inputs (DiG-IN, DiffExplainer).

A library with a CLI on top: ``import digin_cli as digin`` gives the builders and method classes of
:mod:`digin_cli.api` (``digin.load_generator``, ``digin.Disagreement``, ...) and ``digin.run_task`` (one CLI run from
Python). They are imported on first use, so ``digin --help`` and ``digin report`` never pay for torch.
"""

from importlib import import_module
from importlib.util import find_spec

__version__ = "0.1.0"


def __getattr__(name: str):
    if name == "run_task":
        from digin_cli.cli import run_task

        return run_task
    if name.startswith("__") or find_spec(f"{__name__}.{name}") is not None:
        raise AttributeError(name)  # a submodule (from digin_cli import run): the import system imports it
    api = import_module("digin_cli.api")
    try:
        return getattr(api, name)
    except AttributeError:
        raise AttributeError(f"module 'digin_cli' has no attribute '{name}'") from None


def __dir__() -> list[str]:
    return sorted({*globals(), "run_task", *import_module("digin_cli.api").__all__})
