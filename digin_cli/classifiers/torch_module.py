"""Your own PyTorch network as a :class:`Classifier`: any ``nn.Module`` built from a Hydra ``_target_`` node.

The user states what the zoo reads from timm configs, because nothing else knows it: the label set and the
preprocessing the network was trained with (input size, mean, std, interpolation). Wrong normalisation still gives
logits, but meaningless gradients, so none of these has a default. Everything that can be measured is measured once
at load time on a probe batch: the number of logits against the number of names, where the features come from, and
whether the head is linear.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping, Sequence

import torch
from torch import nn

from digin_cli.classifiers.base import _INTERPOLATIONS, Classifier
from digin_cli.classifiers.capture import FeatureTap, last_linear, linear_head, probe, probe_batch
from digin_cli.classifiers.checkpoint import load_into
from digin_cli.classifiers.classnames import load_class_names
from digin_cli.errors import DiginError, suggest

_EXAMPLE_MEAN = "classifier.mean='[0.485,0.456,0.406]' classifier.std='[0.229,0.224,0.225]'"


def import_target(target: object) -> object:
    """The object a dotted ``_target_`` names, importing its module; DiginErrors that say which part is missing."""
    if not isinstance(target, str) or "." not in target.strip("."):
        raise DiginError(f"classifier.model._target_ must be a dotted import path, got {target!r} — e.g. "
                         "classifier.model._target_=my_pkg.nets.resnet20")
    parts = target.split(".")
    for cut in range(len(parts) - 1, 0, -1):  # the longest importable module prefix; the rest are attributes
        name = ".".join(parts[:cut])
        try:
            obj = importlib.import_module(name)
            break
        except ModuleNotFoundError as e:
            if e.name and (name == e.name or name.startswith(e.name + ".")):
                continue  # this prefix is not a module: try a shorter one
            raise DiginError(f"importing '{name}' for classifier.model._target_ failed: {e} — install what "
                             f"'{name}' needs in this environment") from None
        except Exception as e:  # the user's module raised while being imported
            raise DiginError(f"importing '{name}' for classifier.model._target_ raised {type(e).__name__}: "
                             f"{' '.join(str(e).split())} — fix that module") from None
    else:
        raise DiginError(f"cannot import classifier.model._target_ '{target}': no module named '{parts[0]}' — "
                         f"install your package, or put the folder that holds '{parts[0]}' on PYTHONPATH "
                         f"(PYTHONPATH=/path/to/code digin ...)")
    for attr in parts[cut:]:
        if not hasattr(obj, attr):
            public = [a for a in dir(obj) if not a.startswith("_")]
            raise DiginError(f"cannot import classifier.model._target_ '{target}': '{name}' has no '{attr}'"
                             f"{suggest(attr, public)} — check the name in classifier.model._target_")
        obj, name = getattr(obj, attr), f"{name}.{attr}"
    return obj


def build_module(node: Mapping) -> nn.Module:
    """Instantiate the ``classifier.model`` node (its ``_target_`` plus keyword arguments) into an ``nn.Module``."""
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    if not isinstance(node, Mapping) or "_target_" not in node:
        raise DiginError("classifier.model must be a node with a _target_ — e.g. "
                         "classifier.model._target_=my_pkg.nets.resnet20 +classifier.model.num_classes=10")
    target = node["_target_"]
    import_target(target)  # import problems as a clear line before Hydra wraps them
    try:
        module = instantiate(OmegaConf.create(dict(node)) if not OmegaConf.is_config(node) else node)
    except InstantiationException as e:
        cause = e.__cause__ or e
        raise DiginError(f"building classifier.model ({target}) failed: {type(cause).__name__}: "
                         f"{' '.join(str(cause).split())} — check classifier.model's keyword arguments") from None
    if not isinstance(module, nn.Module):
        raise DiginError(f"classifier.model._target_ '{target}' built a {type(module).__name__}, not a torch "
                         "nn.Module — point it at a function or class that returns the network")
    return module


def _check_preprocessing(input_size, mean, std, interpolation) -> None:
    sizes = [input_size] if isinstance(input_size, int) else list(input_size or [])
    if not sizes or len(sizes) > 2 or not all(isinstance(s, int) and s > 0 for s in sizes):
        raise DiginError(f"classifier.input_size must be a positive int or [height, width], got {input_size!r} — "
                         "e.g. classifier.input_size=224")
    for key, values in (("mean", mean), ("std", std)):
        ok = isinstance(values, Sequence) and not isinstance(values, str) and len(values) == 3
        if not ok or not all(isinstance(v, (int, float)) for v in values) or (key == "std" and min(values) <= 0):
            raise DiginError(f"classifier.{key} must be 3 numbers (per RGB channel{', > 0' if key == 'std' else ''}),"
                             f" got {values!r} — e.g. {_EXAMPLE_MEAN}")
    if interpolation not in _INTERPOLATIONS:
        raise DiginError(f"classifier.interpolation must be one of {', '.join(_INTERPOLATIONS)}, got "
                         f"{interpolation!r} — pass the resize the model was trained with")


class TorchModuleClassifier(Classifier):
    """Any ``nn.Module`` mapping normalised ``(B,3,H,W)`` images to ``(B, num_classes)`` logits.

    ``model`` is a Hydra node (``_target_`` + keyword arguments) that builds the network, or the network itself
    (``digin.wrap_classifier``); ``checkpoint`` a state dict
    file loaded strictly (``weights_only`` unless ``trusted_checkpoint``); ``class_names`` a list, a names file, a
    JSON list / mapping, or ``imagenet``. ``features_layer`` names the module whose output, flattened, is
    :meth:`features`; unset, the input of the last child when that is an ``nn.Linear``, else of the last
    ``nn.Linear`` if it produces the logits.
    """

    def __init__(
        self,
        model: Mapping | nn.Module,
        class_names: str | Sequence[str] | Mapping,
        input_size: int | Sequence[int],
        mean: Sequence[float],
        std: Sequence[float],
        interpolation: str,
        checkpoint: str | None = None,
        trusted_checkpoint: bool = False,
        features_layer: str | None = None,
    ) -> None:
        _check_preprocessing(input_size, mean, std, interpolation)
        names = load_class_names(class_names)
        self.target = str(model.get("_target_")) if isinstance(model, Mapping) else type(model).__qualname__
        net = model if isinstance(model, nn.Module) else build_module(model)  # a module: digin.wrap_classifier
        if checkpoint is not None:
            load_into(net, checkpoint, trusted=trusted_checkpoint,
                      fix="check that classifier.model (its _target_ and arguments) builds the checkpoint's network")
        super().__init__(net, names, input_size, mean, std, interpolation)
        self.features_layer = features_layer
        self._tap = self._find_tap(features_layer)
        self._measure()

    # --- load-time checks ---------------------------------------------------------------------------------------

    def _module_names(self) -> list[str]:
        return [n for n, _ in self.model.named_modules() if n]

    def _find_tap(self, layer: str | None) -> FeatureTap | None:
        if layer:
            modules = dict(self.model.named_modules())
            if layer not in modules:
                top = ", ".join(n for n, _ in self.model.named_children())
                raise DiginError(f"unknown classifier.features_layer '{layer}' for {type(self.model).__name__}"
                                 f"{suggest(layer, self._module_names())} — pass one of its module names "
                                 f"(top level: {top})")
            return FeatureTap(modules[layer], reads_input=False)
        children = list(self.model.children())
        if children and isinstance(children[-1], nn.Linear):
            return FeatureTap(children[-1], reads_input=True)
        linear = last_linear(self.model)
        return FeatureTap(linear, reads_input=True) if linear is not None else None

    def _measure(self) -> None:
        """One probe batch: the logits' width must match the names; features' width; is the head linear?"""
        x = probe_batch(self.input_size)
        if self._tap is None:
            out, seen = probe(lambda: self.model(x), f"classifier.model ({self.target})", self.input_size), []
        else:
            out, seen = probe(lambda: self._tap(lambda: self.model(x)), f"classifier.model ({self.target})",
                              self.input_size)
        if not isinstance(out, torch.Tensor) or out.ndim != 2 or out.shape[0] != x.shape[0]:
            got = f"shape {tuple(out.shape)}" if isinstance(out, torch.Tensor) else type(out).__name__
            raise DiginError(f"classifier.model ({self.target}) returns {got}, not (batch, classes) logits — wrap "
                             "it so that forward returns a logits tensor")
        if out.shape[1] != self.num_classes:
            raise DiginError(f"classifier.class_names has {self.num_classes} names but {self.target} gives "
                             f"{out.shape[1]} logits (measured on a probe batch) — give exactly one name per logit, "
                             "in logit order")
        self._num_features, self._head = None, None
        calls = [f for f in seen if isinstance(f, torch.Tensor) and f.shape[0] == x.shape[0]]
        if self.features_layer and len(seen) != 1:
            raise DiginError(f"classifier.features_layer '{self.features_layer}' ran {len(seen)} times in one "
                             "forward pass (measured on a probe batch) — pick a module that runs exactly once")
        if self.features_layer and len(calls) != 1:
            raise DiginError(f"classifier.features_layer '{self.features_layer}' does not return a (batch, ...) "
                             "tensor — pick a module whose output is one tensor")
        if len(calls) == 1 and len(seen) == 1:
            self._num_features = calls[0].shape[1]
            self._head = linear_head(self.model, calls[0], out)
        usable = self._num_features is not None and (self._head is not None or self._last_child_is_linear())
        if not self.features_layer and not usable:
            self._tap = None  # no linear layer produces the logits: features need an explicit features_layer

    def _last_child_is_linear(self) -> bool:
        children = list(self.model.children())
        return bool(children) and isinstance(children[-1], nn.Linear)

    def _no_features(self) -> DiginError:
        top = ", ".join(n for n, _ in self.model.named_children())
        return DiginError(f"{self.target} has no final nn.Linear whose input could serve as features — set "
                          f"classifier.features_layer=<module name> (top level: {top})")

    def _head_module(self) -> nn.Linear:
        return self.model.get_submodule(self._head)

    # --- the contract --------------------------------------------------------------------------------------------

    @property
    def num_features(self) -> int:
        """Width of :meth:`features`."""
        if self._tap is None or self._num_features is None:
            raise self._no_features()
        return self._num_features

    def head(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(W (C, F), b (C,))`` with ``logits == features @ W.T + b``; a DiginError if the head is not linear."""
        if self._head is None:
            reads = (f"classifier.features_layer={self.features_layer}" if self.features_layer
                     else "its features")
            raise DiginError(f"the head of {self.target} reading {reads} is not linear (logits != features @ W.T + "
                             "b on a probe batch) — set classifier.features_layer to the module whose output the "
                             "final nn.Linear reads (e.g. avgpool)")
        linear = self._head_module()
        w, b = linear.weight.detach(), linear.bias
        return w, (b.detach() if b is not None else w.new_zeros(w.shape[0]))

    def _logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def _logits_and_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self._tap is None:
            raise self._no_features()
        logits, seen = self._tap(lambda: self.model(x))
        return logits, seen[-1]
