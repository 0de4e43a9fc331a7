"""The classifier zoo: every model DiG-IN explains, behind one :class:`Classifier` contract.

Configs in ``conf/classifier/`` name a class from this package with ``_target_``; :func:`build_classifier` turns
one into a frozen model on the run's device.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from digin_cli.classifiers.base import Classifier
from digin_cli.classifiers.classnames import (imagenet_class_names, load_class_names, readable, resolve_class,
                                              resolve_in_both, same_label_set)
from digin_cli.errors import DiginError, user_error_in

__all__ = ["Classifier", "build_classifier", "imagenet_class_names", "load_class_names", "readable", "resolve_class",
           "resolve_in_both", "same_label_set"]


_PREPROCESSING = ("input_size", "mean", "std", "interpolation")
_EXAMPLES = {"checkpoint": "/path/to/file.pt", "class_names": "names.txt", "input_size": "224",
             "mean": "'[0.485,0.456,0.406]'", "std": "'[0.229,0.224,0.225]'", "interpolation": "bilinear",
             "model._target_": "my_pkg.nets.resnet20", "pretrained": "org/model"}


def _missing_keys(cfg: Any, prefix: str = "") -> list[str]:
    """Dotted keys left at ``???`` (``in cfg`` is False for them, so they are found through ``keys()``)."""
    from omegaconf import DictConfig, OmegaConf

    found = []
    for k in cfg.keys():
        if OmegaConf.is_missing(cfg, k):
            found.append(f"{prefix}{k}")
        elif isinstance(cfg[k], DictConfig):
            found += _missing_keys(cfg[k], f"{prefix}{k}.")
    return found


def _unknown_keys(cfg: Any) -> tuple[list[str], list[str]]:
    """Config keys the ``_target_`` does not take (it would fail with a TypeError), and the ones it does."""
    import inspect

    from hydra.utils import get_object

    try:
        params = inspect.signature(get_object(cfg.get("_target_"))).parameters
    except Exception:  # not importable or no signature: instantiate reports it
        return [], []
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):
        return [], []
    accepted = [name for name, p in params.items() if name != "self" and p.kind is not p.VAR_POSITIONAL]
    return [str(k) for k in cfg.keys() if not str(k).startswith("_") and k not in params], accepted


def _display_name(cfg: Any, key: str) -> str:
    try:
        from hydra.core.hydra_config import HydraConfig

        return str(HydraConfig.get().runtime.choices[key])
    except Exception:  # outside a Hydra run (tests, notebooks) there are no group choices
        for field in ("name", "model"):
            if cfg.get(field) is not None:
                return str(cfg.get(field))
        return str(cfg.get("_target_", key)).rsplit(".", 1)[-1]


def build_classifier(
    cfg: Any, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32, key: str = "classifier",
    two_stage: bool = True,
) -> Classifier:
    """Instantiate ``cfg`` (a ``conf/classifier`` node), move it to ``device``/``dtype`` and prepare it.

    ``key`` is the config key the node came from (``classifier`` or ``classifier2``), so errors name the override
    the user has to pass. ``grad_checkpointing: auto`` checkpoints the classifier's activations only when the
    optimiser backpropagates the whole loss at once (``two_stage=False``): after the two-stage backward, which holds
    one chunk of cutouts, it no longer lowers the peak and costs a recomputed forward (docs/benchmarks.md).
    """
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate
    from omegaconf import DictConfig, OmegaConf

    if isinstance(cfg, Mapping) and not isinstance(cfg, DictConfig):
        cfg = OmegaConf.create(dict(cfg))
    if cfg.get("grad_checkpointing") == "auto":
        cfg = cfg.copy()
        cfg.grad_checkpointing = not two_stage
    missing = _missing_keys(cfg)
    if missing == ["checkpoint"]:
        raise DiginError(
            f"classifier '{_display_name(cfg, key)}' needs its weights file: pass {key}.checkpoint=/path/to/file.pt"
        )
    if missing:
        raise DiginError(
            f"classifier '{_display_name(cfg, key)}' needs {', '.join(f'{key}.{k}' for k in missing)} — pass e.g. "
            + " ".join(f"{key}.{k}={_EXAMPLES.get(k, '...')}" for k in missing)
            + (" (the preprocessing the model was trained with: wrong values give meaningless gradients)"
               if set(missing) & set(_PREPROCESSING) else "")
        )
    unknown, accepted = _unknown_keys(cfg)
    if unknown:
        raise DiginError(f"classifier '{_display_name(cfg, key)}' has no option {', '.join(unknown)} — remove "
                         + " ".join(f"~{key}.{k}" for k in unknown) + f" (its options: {', '.join(accepted)})")
    try:
        clf = instantiate(cfg, _convert_="all")
    except InstantiationException as e:
        cause = user_error_in(e)
        if cause is None:
            raise
        # Re-raise the user's error without Hydra's wrapper, but with the classifier.* key the user actually set.
        msg = str(cause)
        if key != "classifier":
            msg = msg.replace("classifier.", f"{key}.")
        raise DiginError(msg) from cause
    if not isinstance(clf, Classifier):
        raise TypeError(f"{cfg.get('_target_')} built {type(clf).__name__}, not a digin Classifier")
    clf = clf.to(device=device, dtype=dtype)
    clf.prepare()
    return clf
