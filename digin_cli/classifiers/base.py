"""The one classifier contract every task relies on.

Tasks hand classifiers images straight from the generator: float ``(B,3,H,W)`` in ``[0,1]`` at the generator's
resolution. Each classifier resizes and normalises them itself, differentiably, so that the optimiser can push
gradients back into the diffusion inputs. Like the DiG-IN authors we resize without a centre crop: the whole
generated image is what the classifier should judge.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from digin_cli.errors import DiginError

_INTERPOLATIONS = ("bilinear", "bicubic")


def _as_hw(size: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(size, int):
        return (size, size)
    size = tuple(int(s) for s in size)
    # timm reports (C, H, W); open_clip reports an int or (H, W).
    return size[-2:] if len(size) >= 2 else (size[0], size[0])


class Classifier(nn.Module):
    """A frozen image classifier taking ``[0,1]`` images at any resolution.

    Subclasses implement :meth:`_logits_and_features` on already-normalised input; they may override
    :meth:`_logits` / :meth:`_features` when one of the two is cheaper on its own.
    """

    def __init__(
        self,
        model: nn.Module,
        class_names: Sequence[str],
        input_size: int | Sequence[int],
        mean: Sequence[float],
        std: Sequence[float],
        interpolation: str = "bilinear",
    ) -> None:
        super().__init__()
        if interpolation not in _INTERPOLATIONS:
            raise ValueError(f"interpolation must be one of {_INTERPOLATIONS}, got {interpolation!r}")
        self.model = model
        self.class_names = list(class_names)
        self.input_size = _as_hw(input_size)
        self.interpolation = interpolation
        # Buffers so that .to(device, dtype) carries them along; not persistent so state dicts stay the model's.
        self.register_buffer("mean", torch.as_tensor(mean, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.as_tensor(std, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.freeze()

    def freeze(self) -> None:
        """Eval mode and no parameter gradients: only the input is optimised."""
        self.eval()
        for p in self.parameters():
            p.requires_grad_(False)

    def train(self, mode: bool = True) -> Classifier:
        # Classifiers are judges, never trained here; keep BatchNorm/dropout in eval even if a caller flips modes.
        return super().train(False)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def preprocess(self, x: torch.Tensor) -> torch.Tensor:
        """Resize (antialiased, only if needed) to ``input_size`` and normalise; differentiable."""
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"expected images of shape (B,3,H,W), got {tuple(x.shape)}")
        x = x.to(self.mean.dtype)
        if tuple(x.shape[-2:]) != self.input_size:
            x = F.interpolate(x, size=self.input_size, mode=self.interpolation, antialias=True, align_corners=False)
        return (x - self.mean) / self.std

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(B, num_classes)`` for ``[0,1]`` images ``x``."""
        return self._logits(self.preprocess(x))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate features ``(B, F)``: the input of the final linear layer."""
        return self._features(self.preprocess(x))

    def logits_and_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Both from one backbone pass (neuron objectives need the features, reports need the logits)."""
        return self._logits_and_features(self.preprocess(x))

    @property
    def num_features(self) -> int:
        """Length F of :meth:`features` (DiG-IN's φ, Eq. 6): one dummy pass, remembered."""
        if getattr(self, "_num_features", None) is None:
            p = next(iter(self.buffers()))
            with torch.no_grad():
                x = torch.zeros(1, 3, *self.input_size, device=p.device, dtype=p.dtype)
                self._num_features = int(self._features((x - self.mean) / self.std).shape[-1])
        return self._num_features

    def head(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The final linear layer ``(W (C, F), b (C,))`` with ``logits == features(x) @ W.T + b``.

        Feature rankings and NPCA components (DiG-IN Sec. 6) read class weights from it, so a classifier whose head
        is not linear over :meth:`features` raises :class:`DiginError`.
        """
        raise DiginError(f"{type(self).__name__} has no linear head over its features — class-feature rankings and "
                         "NPCA need a classifier whose logits are features @ W.T + b; pass task.neurons or "
                         "task.component_file instead, or pick another classifier")

    @staticmethod
    def _linear(layer: nn.Module, name: str) -> tuple[torch.Tensor, torch.Tensor]:
        """``(W, b)`` of ``layer`` when it is an ``nn.Linear``; a one-line error naming ``name`` otherwise."""
        if not isinstance(layer, nn.Linear):
            raise DiginError(f"the head of {name} is {type(layer).__name__}, not a linear layer over its features — "
                             "class-feature rankings and NPCA need logits = features @ W.T + b; pass task.neurons "
                             "or task.component_file instead, or pick another classifier")
        w = layer.weight.detach()
        b = layer.bias.detach() if layer.bias is not None else w.new_zeros(w.shape[0])
        return w, b

    def prepare(self) -> None:
        """One-off work best done on the final device (e.g. building zero-shot class weights); no-op by default."""

    def enable_grad_checkpointing(self) -> bool:
        """Trade compute for memory when backpropagating through big backbones; False if unsupported."""
        setter = getattr(self.model, "set_grad_checkpointing", None)
        if setter is None:
            return False
        setter(True)
        return True

    def _logits_and_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def _logits(self, x: torch.Tensor) -> torch.Tensor:
        return self._logits_and_features(x)[0]

    def _features(self, x: torch.Tensor) -> torch.Tensor:
        return self._logits_and_features(x)[1]
