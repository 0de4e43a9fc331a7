"""digin: investigate image classifiers by optimising Stable Diffusion inputs (DiG-IN, DiffExplainer).

A library with a CLI on top: ``import digin_cli as digin`` gives the builders and method classes of
:mod:`digin_cli.api` (``digin.load_generator``, ``digin.Disagreement``, ...) and ``digin.run_task`` (one CLI run from
Python). They are imported on first use, so ``digin --help`` and ``digin report`` never pay for torch.
"""

from importlib import import_module

__version__ = "0.1.0"


def __getattr__(name: str):
    if name == "run_task":
        from digin_cli.run import run_task

        return run_task
    if name.startswith("__") or name == "api":  # "api" itself: the import system asks while importing it
        raise AttributeError(name)
    api = import_module("digin_cli.api")
    try:
        return getattr(api, name)
    except AttributeError:
        raise AttributeError(f"module 'digin_cli' has no attribute '{name}'") from None


def __dir__() -> list[str]:
    return sorted({*globals(), "run_task", *import_module("digin_cli.api").__all__})
