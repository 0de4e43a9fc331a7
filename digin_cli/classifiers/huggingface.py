"""Any Hugging Face ``transformers`` image classifier as a :class:`Classifier` (hub id or local folder).

The model comes from ``AutoModelForImageClassification``, the label set from its ``config.id2label`` and the
preprocessing from its ``AutoImageProcessor`` config: size, resample, rescale factor, mean and std. The processor
itself works on PIL / numpy images and is not differentiable, so its numbers are applied as the zoo's own
differentiable resize and normalisation: ``(x * 255 * rescale_factor - mean) / std`` for ``x`` in ``[0, 1]``, i.e.
mean and std divided by ``255 * rescale_factor``. :meth:`features` is the pooled representation the classification
head reads, taken with a hook on the head's input.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import torch

from digin_cli.classifiers.base import Classifier
from digin_cli.classifiers.capture import FeatureTap, linear_head, probe, probe_batch
from digin_cli.errors import DiginError, hub_loading, load_error

_HEAD_NAMES = ("classifier", "head", "fc")
# PIL resampling codes (transformers stores them as ints or PIL enums) -> the two antialiased torch resizes.
_RESAMPLE = {0: "bilinear", 1: "bicubic", 2: "bilinear", 3: "bicubic", 4: "bilinear", 5: "bilinear"}




_LOADING = dict(what="Hugging Face classifier", local_what="a Hugging Face image classifier", pronoun="it",
                fix="or set classifier.pretrained=/local/folder (written by save_pretrained)",
                local_fix="point classifier.pretrained= at a folder written by save_pretrained (config.json + "
                          "weights + preprocessor_config.json)")


def _as_size(size) -> dict:
    """A processor's size field (dict, transformers ``SizeDict`` or a bare int) as a plain dict."""
    if size is None:
        return {}
    if isinstance(size, int):
        return {"shortest_edge": size}
    return dict(size.items()) if hasattr(size, "items") else dict(size)


def preprocessing_from_processor(processor) -> dict:
    """``input_size``, ``mean``, ``std``, ``interpolation`` for [0,1] inputs from an image processor's config.

    No centre crop, as everywhere in digin: a square crop size (or the shortest edge) becomes the input size the
    whole image is resized to.
    """
    size, crop = _as_size(getattr(processor, "size", None)), _as_size(getattr(processor, "crop_size", None))
    if getattr(processor, "do_center_crop", False) and crop and crop.get("height"):
        hw = (int(crop["height"]), int(crop["width"]))
    elif size.get("height"):
        hw = (int(size["height"]), int(size["width"]))
    elif size.get("shortest_edge"):
        hw = (int(size["shortest_edge"]),) * 2
    else:
        raise DiginError(f"cannot read an input size from the image processor config ({size}) — pass "
                         "classifier.input_size=<int>")
    scale = 255.0 * float(processor.rescale_factor) if getattr(processor, "do_rescale", True) else 255.0
    if getattr(processor, "do_normalize", True):
        mean, std = list(processor.image_mean), list(processor.image_std)
    else:
        mean, std = [0.0, 0.0, 0.0], [1.0, 1.0, 1.0]
    if len(mean) == 1:
        mean, std = mean * 3, std * 3
    resample = getattr(processor, "resample", 2)
    return {"input_size": hw, "mean": [m / scale for m in mean], "std": [s / scale for s in std],
            "interpolation": _RESAMPLE.get(int(getattr(resample, "value", resample)), "bilinear")}


def classification_head(model: torch.nn.Module) -> torch.nn.Module:
    """The module that maps the pooled representation to logits (``classifier`` in most transformers models)."""
    for name in _HEAD_NAMES:
        head = getattr(model, name, None)
        if isinstance(head, torch.nn.Module):
            return head
    raise DiginError(f"cannot find the classification head of {type(model).__name__} (none of: "
                     f"{', '.join(_HEAD_NAMES)}) — use classifier=torch_module with classifier.features_layer=")


class HFClassifier(Classifier):
    """``AutoModelForImageClassification`` + its processor's preprocessing; names from ``config.id2label``.

    ``input_size`` / ``mean`` / ``std`` / ``interpolation`` override the processor config (mean and std for ``[0,1]``
    inputs), e.g. for a folder without ``preprocessor_config.json``.
    """

    def __init__(
        self,
        pretrained: str,
        revision: str | None = None,
        input_size: int | Sequence[int] | None = None,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        interpolation: str | None = None,
    ) -> None:
        from transformers import AutoImageProcessor, AutoModelForImageClassification

        if not pretrained:
            raise DiginError("classifier.pretrained is empty — pass a hub id (e.g. nateraw/food) or a local folder")
        pretrained = str(pretrained)
        path = os.path.expanduser(pretrained)
        source = path if os.path.isdir(path) else pretrained
        with hub_loading(pretrained, **_LOADING):
            model = AutoModelForImageClassification.from_pretrained(source, revision=revision)
        prep = {}
        if None in (input_size, mean, std, interpolation):
            try:
                processor = AutoImageProcessor.from_pretrained(source, revision=revision)
            except (OSError, ValueError) as err:
                if os.path.isdir(path):
                    raise DiginError(f"'{pretrained}' has no usable image processor config ({type(err).__name__}) —"
                                     " add preprocessor_config.json, or pass classifier.input_size / mean / std / "
                                     "interpolation") from None
                raise load_error(pretrained, err, **_LOADING) from None
            prep = preprocessing_from_processor(processor)
        given = {"input_size": input_size, "mean": mean, "std": std, "interpolation": interpolation}
        prep.update({k: v for k, v in given.items() if v is not None})
        id2label = model.config.id2label
        names = [str(id2label[i]) for i in range(model.config.num_labels)]
        super().__init__(model, names, **prep)
        self.pretrained = pretrained
        self._tap = FeatureTap(classification_head(model), reads_input=True)
        self._measure()

    def _measure(self) -> None:
        """Feature width and whether the head is one linear map, on a probe batch."""
        x = probe_batch(self.input_size)
        out, seen = probe(lambda: self._tap(lambda: self.model(pixel_values=x).logits), f"'{self.pretrained}'",
                          self.input_size)
        if len(seen) != 1 or not isinstance(seen[0], torch.Tensor):
            raise DiginError(f"the classification head of '{self.pretrained}' ran {len(seen)} times in one forward "
                             "pass — use classifier=torch_module with classifier.features_layer=")
        self._num_features = seen[0].shape[1]
        self._head = linear_head(self._tap.module, seen[0], out)

    def _head_module(self) -> torch.nn.Linear:
        return self._tap.module.get_submodule(self._head)

    @property
    def num_features(self) -> int:
        """Width of :meth:`features`: the pooled representation the head reads."""
        return self._num_features

    def head(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(W (C, F), b (C,))`` of the classification head; a DiginError if it is not one linear layer."""
        if self._head is None:
            raise DiginError(f"the classification head of '{self.pretrained}' is not linear (logits != features @ "
                             "W.T + b on a probe batch) — neuron tasks need a linear head")
        linear = self._head_module()
        w, b = linear.weight.detach(), linear.bias
        return w, (b.detach() if b is not None else w.new_zeros(w.shape[0]))

    def _logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(pixel_values=x).logits

    def _logits_and_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits, seen = self._tap(lambda: self.model(pixel_values=x).logits)
        return logits, seen[-1]
