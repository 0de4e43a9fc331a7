"""Zero-shot CLIP (open_clip) as an ImageNet classifier.

The text side is only needed to build the class weights ``W`` (one averaged, normalised prompt embedding per class).
Building them runs the text tower over 1000 classes x up to 80 templates, which takes minutes on a CPU and seconds on
a GPU, so they are built once, on the device the classifier has been moved to, and cached on disk.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from pathlib import Path

import torch

from digin_cli.classifiers.base import _INTERPOLATIONS, Classifier
from digin_cli.classifiers.checkpoint import is_download_error
from digin_cli.classifiers.classnames import imagenet_class_names
from digin_cli.errors import DiginError, hub_loading, suggest

_TEMPLATE_SETS = ("openai", "simple")
_DEFAULT_CACHE = "~/.cache/digin/zeroshot"


def _templates(kind: str) -> list:
    from open_clip import zero_shot_metadata as meta

    if kind == "openai":
        return list(meta.OPENAI_IMAGENET_TEMPLATES)
    if kind == "simple":
        return list(meta.SIMPLE_IMAGENET_TEMPLATES)
    raise DiginError(f"unknown zero-shot templates '{kind}' — pass classifier.templates=openai or simple")


def _check_names(model: str, pretrained: str | None) -> None:
    import open_clip

    if model.startswith(("hf-hub:", "local-dir:")):
        return
    known = open_clip.list_models()
    if model not in known:
        raise DiginError(f"unknown open_clip model '{model}'{suggest(model, known)} — pass classifier.model=<name>")
    if pretrained is None or os.path.isfile(os.path.expanduser(pretrained)):
        return
    tags = open_clip.list_pretrained_tags_by_model(model)
    if pretrained not in tags:
        raise DiginError(
            f"open_clip model '{model}' has no pretrained tag '{pretrained}'{suggest(pretrained, tags)}"
            " — pass classifier.pretrained=<tag> or a local weights file"
        )


class OpenClipZeroShot(Classifier):
    """``logit_scale.exp() * normalize(image_embedding) @ W`` over the ImageNet class names.

    ``pretrained=None`` gives randomly initialised weights (tests register tiny configs with
    ``open_clip.add_model_config``). ``cache_dir`` is where the class weights are cached.
    """

    def __init__(
        self,
        model: str = "ViT-B-16",
        pretrained: str | None = "laion2b_s34b_b88k",
        templates: str = "openai",
        cache_dir: str | None = None,
    ) -> None:
        import open_clip

        self._template_list = _templates(templates)
        _check_names(model, pretrained)
        weights = pretrained
        if pretrained is not None and os.path.isfile(os.path.expanduser(pretrained)):
            weights = os.path.expanduser(pretrained)  # open_clip tests the path as given, without '~'
        # A tag is fetched from the hub (an hf-hub: model with its own weights); a local file is read as it is.
        with hub_loading(str(weights if weights is not None else model), what=f"open_clip '{model}' weights",
                         failed=is_download_error, fix="or pass classifier.pretrained=/path/to/weights",
                         local_fix="check that classifier.model is the architecture of these weights"):
            clip, _, _ = open_clip.create_model_and_transforms(model, pretrained=weights)
        cfg = open_clip.get_model_preprocess_cfg(clip)
        interp = cfg.get("interpolation", "bicubic")
        super().__init__(
            clip,
            imagenet_class_names(),
            input_size=cfg["size"],
            mean=cfg["mean"],
            std=cfg["std"],
            interpolation=interp if interp in _INTERPOLATIONS else "bicubic",
        )
        self.model_name, self.pretrained, self.templates = model, pretrained, templates
        self._tokenizer = open_clip.get_tokenizer(model)
        self.cache_path = Path(os.path.expanduser(cache_dir or _DEFAULT_CACHE)) / f"{self._cache_key()}.safetensors"
        # None until loaded or built; a buffer so .to(device, dtype) moves it once it exists.
        self.register_buffer("class_weights", None, persistent=False)
        if self.cache_path.is_file():
            self._load_cache()

    def _cache_key(self) -> str:
        weights = str(self.pretrained)
        if self.pretrained is None:
            # Random text towers differ per seed; key on their weights so no run reuses another's classes.
            weights = self._text_digest()
        elif os.path.isfile(os.path.expanduser(self.pretrained)):
            # A local file can be replaced under the same name; key on its identity, not its path alone.
            path = os.path.abspath(os.path.expanduser(self.pretrained))
            st = os.stat(path)
            weights = "file-" + hashlib.sha1(f"{path}:{st.st_size}:{st.st_mtime_ns}".encode()).hexdigest()[:12]
        parts = [self.model_name, weights, self.templates]
        return re.sub(r"[^A-Za-z0-9._-]+", "_", "__".join(parts))

    def _text_digest(self) -> str:
        h = hashlib.sha1()
        for name, t in self.model.state_dict().items():
            if not name.startswith("visual."):
                h.update(name.encode())
                h.update(t.detach().float().cpu().numpy().tobytes())
        return "rand-" + h.hexdigest()[:12]

    def _load_cache(self) -> None:
        from safetensors.torch import load_file

        try:
            w = load_file(str(self.cache_path))["weights"]
        except Exception:  # unreadable cache: it is only a cache, so rebuild (and overwrite) it
            return
        if w.ndim != 2 or w.shape[1] != self.num_classes:
            return  # a stale or foreign file: rebuild rather than trust it
        p = next(self.model.parameters())
        self.class_weights = w.to(device=p.device, dtype=p.dtype)

    def _save_cache(self, w: torch.Tensor) -> None:
        from safetensors.torch import save_file

        self.cache_path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.cache_path.parent, suffix=".tmp")
        os.close(fd)
        try:
            save_file(
                {"weights": w.detach().float().cpu().contiguous()},
                tmp,
                metadata={"model": self.model_name, "pretrained": str(self.pretrained), "templates": self.templates},
            )
            # Readers see the old file or the complete new one, never a partial write (parallel sweeps share it).
            os.replace(tmp, self.cache_path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)

    def prepare(self) -> None:
        """Load or build the class weights now (on the current device) rather than on the first forward."""
        if self.class_weights is not None:
            return
        import open_clip

        p = next(self.model.parameters())
        with torch.no_grad():
            w = open_clip.build_zero_shot_classifier(
                self.model,
                self._tokenizer,
                self.class_names,
                self._template_list,
                num_classes_per_batch=50,
                device=p.device,
            )
        self._save_cache(w)
        self.class_weights = w.to(dtype=p.dtype)

    @property
    def num_features(self) -> int:
        dim = getattr(self.model.visual, "output_dim", None)  # not every open_clip tower records it
        return int(dim) if dim else Classifier.num_features.fget(self)

    def head(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``W = logit_scale.exp() * class_weights.T`` over the normalised image embedding, ``b = 0``."""
        self.prepare()
        w = (self.model.logit_scale.exp() * self.class_weights.T).detach()
        return w, w.new_zeros(w.shape[0])

    def _features(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.encode_image(x, normalize=True)

    def _logits_and_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self.prepare()
        f = self._features(x)
        return self.model.logit_scale.exp() * f @ self.class_weights, f
