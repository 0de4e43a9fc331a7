"""Any timm model as a :class:`Classifier`, with hub weights or a local checkpoint.

Preprocessing comes from the model's own pretrained config (input size, mean/std, interpolation), because a
classifier judged at the wrong resolution or normalisation gives meaningless gradients.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from digin_cli.classifiers.base import _INTERPOLATIONS, Classifier
from digin_cli.classifiers.checkpoint import is_download_error, load_into
from digin_cli.classifiers.classnames import imagenet_class_names, load_class_names
from digin_cli.errors import DiginError, hub_loading, suggest


def _check_name(name: str) -> None:
    import timm
    from timm.models import split_model_name_tag

    if ":" in name:  # 'hf-hub:org/repo' or 'local-dir:path': timm resolves these itself
        return
    arch, tag = split_model_name_tag(name)
    if not timm.is_model(arch):
        raise DiginError(
            f"unknown timm model '{name}'{suggest(name, timm.list_pretrained())} — pass classifier.name=<a timm model>"
        )
    if tag and name not in timm.list_pretrained(f"{arch}.*"):
        raise DiginError(
            f"timm model '{arch}' has no pretrained tag '{tag}'{suggest(name, timm.list_pretrained(f'{arch}.*'))}"
            " — pass classifier.name=<a timm model>"
        )


class TimmClassifier(Classifier):
    """A timm model; ``checkpoint`` (a local file) replaces the hub weights, e.g. for adversarially robust models.

    ``input_size``/``interpolation``/``mean``/``std`` override the pretrained config, for checkpoints trained with
    a different recipe than the timm tag the architecture comes from. ``trusted_checkpoint`` allows unpickling
    checkpoints that hold more than tensors (can run code from the file). ``num_classes`` sizes the head for a
    checkpoint of another dataset, and ``class_names`` (list, names file, JSON, ``imagenet``) names its classes.
    """

    def __init__(
        self,
        name: str,
        pretrained: bool = True,
        checkpoint: str | None = None,
        grad_checkpointing: bool = False,
        trusted_checkpoint: bool = False,
        input_size: int | Sequence[int] | None = None,
        interpolation: str | None = None,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        num_classes: int | None = None,
        class_names: str | Sequence[str] | None = None,
    ) -> None:
        import timm

        _check_name(name)
        head = {} if num_classes is None else {"num_classes": int(num_classes)}
        local = name.split(":", 1)[1] if name.startswith("local-dir:") else name
        with hub_loading(local, what="timm weights", local_what="a timm model", failed=is_download_error,
                         fix="or pass classifier.checkpoint=/path/to/weights",
                         local_fix="point classifier.name=local-dir:<folder> at a folder with config.json and the"
                                   " weights, or pass classifier.checkpoint=/path/to/weights"):
            model = timm.create_model(name, pretrained=bool(pretrained) and checkpoint is None, **head)
        if checkpoint is not None:
            load_into(model, checkpoint, trusted=trusted_checkpoint)

        data = timm.data.resolve_model_data_config(model)
        interp = interpolation or data.get("interpolation", "bilinear")
        # timm also knows 'nearest'/'random'; antialiased differentiable resizing only exists for these two.
        if interp not in _INTERPOLATIONS:
            interp = "bilinear"
        n = model.num_classes
        if class_names is not None:
            names = load_class_names(class_names)
            if len(names) != n:
                raise DiginError(f"classifier.class_names has {len(names)} names but timm model '{name}' has {n} "
                                 "outputs — give one name per class, or set classifier.num_classes to match")
        else:
            names = imagenet_class_names() if n == 1000 else [f"class_{i}" for i in range(n)]
        super().__init__(
            model,
            names,
            input_size=input_size or data["input_size"],
            mean=mean or data["mean"],
            std=std or data["std"],
            interpolation=interp,
        )
        self.name = name
        if grad_checkpointing not in (True, False):  # "auto" is resolved by build_classifier, which knows the backward
            raise ValueError(f"grad_checkpointing must be True or False here, got {grad_checkpointing!r}")
        if grad_checkpointing:
            self.enable_grad_checkpointing()

    @property
    def num_features(self) -> int:
        # head_hidden_size is the pre-logits width (differs from num_features for models with an MLP pre-head).
        return int(getattr(self.model, "head_hidden_size", None) or self.model.num_features)

    def head(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``model.get_classifier()``: ResNet ``fc``, ConvNeXt ``head.fc``, ViT ``head`` (an ``nn.Linear``)."""
        return self._linear(self.model.get_classifier(), f"timm model '{self.name}'")

    def _logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def _features(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.forward_head(self.model.forward_features(x), pre_logits=True)

    def _logits_and_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        fmap = self.model.forward_features(x)
        # The head (pooling + fc) is cheap; running it twice keeps models with unusual heads exact.
        return self.model.forward_head(fmap), self.model.forward_head(fmap, pre_logits=True)
