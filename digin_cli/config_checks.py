"""Pre-flight checks that need more than a number's type: a built-in classifier's options, real-image input options.

Called by :func:`digin_cli.configs.check_config`, so the CLI's pre-flight reports them in ~1 s, before any run folder
exists. Nothing here imports torch or a model: a built-in classifier's options are read from its class's source.
"""

from __future__ import annotations

import ast
from functools import lru_cache
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from digin_cli.errors import DiginError

_PACKAGE = Path(__file__).resolve().parent


@lru_cache(maxsize=None)
def _init_parameters(target: str) -> tuple[str, ...] | None:
    """The keyword parameters of a digin class's ``__init__``, read from its source; None if unknown or **kwargs."""
    module, _, name = target.rpartition(".")
    if not module.startswith("digin_cli."):
        return None
    path = _PACKAGE.joinpath(*module.split(".")[1:]).with_suffix(".py")
    try:
        tree = ast.parse(path.read_text())
    except (OSError, SyntaxError):
        return None
    cls = next((n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == name), None)
    init = next((n for n in (cls.body if cls else []) if isinstance(n, ast.FunctionDef) and n.name == "__init__"),
                None)
    if init is None or init.args.kwarg is not None:
        return None
    args = [*init.args.posonlyargs, *init.args.args, *init.args.kwonlyargs]
    return tuple(a.arg for a in args if a.arg != "self")


def _classifier_options(cfg: DictConfig) -> None:
    """``+classifier.bogus=1`` on a built-in classifier: one line before the run, not a TypeError inside it."""
    for key in ("classifier", "classifier2"):
        node = cfg.get(key)
        if not isinstance(node, DictConfig) or not isinstance(node.get("_target_"), str):
            continue
        accepted = _init_parameters(node._target_)
        if accepted is None:
            continue
        unknown = [str(k) for k in node.keys() if not str(k).startswith("_") and k not in accepted]
        if unknown:
            name = OmegaConf.select(cfg, f"hydra.runtime.choices.{key}", default=None) or node._target_.rsplit(".")[-1]
            raise DiginError(f"classifier '{name}' has no option {', '.join(unknown)} — remove "
                             + " ".join(f"+{key}.{k}" for k in unknown) + f" (its options: {', '.join(accepted)})")


def _real_image_options(cfg: DictConfig) -> None:
    task = cfg.get("task")
    if not isinstance(task, DictConfig):
        return
    fraction = task.get("crop_fraction", 0.8)
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0 < fraction <= 1:
        raise DiginError(f"task.crop_fraction must be a number in (0, 1], got {fraction!r} — pass 0.8 (DiG-IN's "
                         "centre crop) or 1.0 (the whole shorter side, for tightly framed images)")
    skip = task.get("skip_unreadable", False)
    if not isinstance(skip, bool):
        raise DiginError(f"task.skip_unreadable must be true or false, got {skip!r} — pass "
                         "task.skip_unreadable=true to skip undecodable images")


def check_inputs(cfg: DictConfig) -> None:
    """All checks of this module (see the module docstring)."""
    _classifier_options(cfg)
    _real_image_options(cfg)
