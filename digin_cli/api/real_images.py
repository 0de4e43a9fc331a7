"""What the real-image methods share: their settings, reading an image argument, and preparing an image once.

A real image is edited through :class:`digin_cli.counterfactual.RealImageEditor` (DiG-IN Sec. 5: null-text
inversion, cross-attention masks, prompt-to-prompt injection and blend). :class:`RealImageMethod` builds one from a
generator, a classifier and a segmenter for Python callers; the CLI tasks hand it the editor, cache and cutouts of
their run instead (:meth:`RealImageMethod.from_parts`), so both run the same code.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, fields
from pathlib import Path

import torch

from digin_cli.api.builders import optimizer_settings
from digin_cli.api.common import default_sampler
from digin_cli.augment import Cutouts
from digin_cli.captioning import Captioner, TemplateCaptioner
from digin_cli.classifiers import Classifier, resolve_class
from digin_cli.counterfactual import PreparedImage, RealImageEditor
from digin_cli.data import InputImage
from digin_cli.data.images import IMAGE_EXTENSIONS
from digin_cli.data.prepare import CROP_FRACTION, Unreadable, decode, preprocess
from digin_cli.device import peak_memory_mb, seed_everything
from digin_cli.errors import DiginError
from digin_cli.generation.sampler import DDIMSampler
from digin_cli.io.writer import slug
from digin_cli.optimize import OptimSettings
from digin_cli.segmentation import NoSegmenter, Segmenter


@dataclass
class EditSettings:
    """The real-image block of ``conf/task/{vce,neuron_cf,npca}.yaml`` (the authors' values): a method's ``edit=``."""

    w_vae: float = 25.0
    """Eq. 4 weight of the distance in VAE latent space (authors' command)."""
    w_px: float = 250.0
    """Eq. 4 weight of the distance in pixel space."""
    mask_steps: float = 0.5
    """The attention maps of this first fraction of the steps make the mask."""
    inner_steps: int = 10
    """Null-text inversion: optimisation steps per DDIM step."""
    early_stop: float = 1e-5
    """Null-text inversion: stop a step's inner loop below this loss."""
    injections: tuple[float, ...] = (0.3, 0.4, 0.5)
    """Prompt-to-prompt: inject the source cross-attention for the first 30/40/50 % of the steps (searched)."""
    blends: tuple[float, ...] = (0.0, 0.3)
    """Blend the kept region toward the reconstruction for none / the first 30 % of the steps (searched)."""
    crop_fraction: float = CROP_FRACTION
    """Share of the shorter side the centre crop keeps when an image is read (0.8: DiG-IN's ImageNet crop)."""

    @classmethod
    def from_task(cls, task) -> EditSettings:
        """The settings a task config node (``cfg.task``) holds."""
        values = {"w_vae": float(task.w_vae), "w_px": float(task.w_px), "mask_steps": float(task.mask_steps),
                  "inner_steps": int(task.inversion.inner_steps), "early_stop": float(task.inversion.early_stop),
                  "injections": tuple(float(x) for x in task.p2p.injections),
                  "blends": tuple(float(x) for x in task.p2p.blends),
                  "crop_fraction": float(task.get("crop_fraction", CROP_FRACTION))}
        names = {f.name for f in fields(cls)}
        values.update({k: task[k] for k in names - set(values) if k in task})
        return cls(**values)


def as_input(image, resolution: int, crop_fraction: float = CROP_FRACTION) -> InputImage:
    """``image`` (a path, a PIL image or a ``(3, H, W)`` / ``(1, 3, H, W)`` tensor in [0, 1]) read as the CLI reads
    ``task.images``: centre crop of ``crop_fraction`` of the shorter side, resized to ``resolution``."""
    from PIL import Image

    if isinstance(image, InputImage):
        return image
    if isinstance(image, (str, os.PathLike)):
        path = Path(image).expanduser()
        fix = "pass a readable image file, a PIL image or a [0, 1] tensor"
        if not path.is_file():
            raise DiginError(f"image not found: {path} — {fix}")
        if path.suffix.lower() not in {e.lower() for e in IMAGE_EXTENSIONS}:
            raise DiginError(f"not an image file: {path} (accepted: {', '.join(IMAGE_EXTENSIONS[:5])}) — {fix}")
        try:  # decoded here (as load_inputs does one file) so the line names the API's inputs, not task.images
            x = decode(path, resolution, crop_fraction)
        except Unreadable as err:
            raise DiginError(f"cannot read image {path} ({err.reason}) — {fix}") from None
        return InputImage(image=x, name=slug(path.stem), path=path)
    if isinstance(image, torch.Tensor):
        x = image.detach().float().cpu()
        x = x[None] if x.ndim == 3 else x
        if x.ndim != 4 or x.shape[:2] != (1, 3) or x.min() < 0 or x.max() > 1:
            raise DiginError(f"an image tensor must be (3, H, W) or (1, 3, H, W) with values in [0, 1], got shape "
                             f"{tuple(image.shape)} in [{float(image.min()):.3g}, {float(image.max()):.3g}] — pass "
                             "x.clamp(0, 1), or a path / PIL image")
        if x.shape[-2:] == (resolution, resolution):  # already the generator's size: used as given
            return InputImage(x, "image", Path("image"))
        image = Image.fromarray((x[0].permute(1, 2, 0) * 255).round().byte().numpy())
    if isinstance(image, Image.Image):
        return InputImage(preprocess(image, resolution, crop_fraction), "image", Path("image"))
    raise DiginError(f"cannot read an image from a {type(image).__name__} — pass a path, a PIL image or a [0, 1] "
                     "tensor")


class _MemoryCache:
    """Inversions kept in memory for the caller's session: the API writes nothing to disk unless asked."""

    def __init__(self):
        self.entries: dict[str, object] = {}

    def get_or_invert(self, key, compute, device="cpu"):
        if key not in self.entries:
            self.entries[key] = compute()
        return self.entries[key].to(device)


class Preparer:
    """``prepare(image, start_words, words=None)``: caption + inversion + masks of an image (the mask from the
    attention of ``words``, default ``start_words``), computed once and shared by all of the image's items (the last
    image is remembered: items of one image run one after another)."""

    def __init__(self, editor: RealImageEditor, captioner: Captioner):
        self.editor, self.captioner = editor, captioner
        self.memo: dict = {}

    def __call__(self, image: InputImage, start_words: str, words: str | None = None) -> PreparedImage:
        key = (image.content_hash, start_words, words)
        if self.memo.get("key") != key:
            caption = self.captioner.caption(image.image, start_words, key=image.content_hash)
            self.memo.update(key=key, value=self.editor.prepare(image.image, caption, words or start_words))
        return self.memo["value"]


def _sampler(gen, settings: OptimSettings) -> DDIMSampler:
    """DDIM over ``gen`` (checkpointed unless ``settings.checkpointing`` is False, as the CLI); LCM's noisy steps have
    no inverse."""
    if getattr(gen, "sampler_name", "ddim") != "ddim":
        raise DiginError(f"real images are inverted with the deterministic DDIM sampler, not "
                         f"{gen.sampler_name} — load the generator with sampler='ddim' (no LCM LoRA)")
    return default_sampler(gen, settings)


class RealImageMethod:
    """The parts every real-image method holds. ``captioner`` None: the caption is the template "an image of a
    <class>" (as neuron_cf / npca; for counterfactuals the CLI's ``captioner=none`` ablation, warned about: the paper
    captions with BLIP-large, ``captioning.HFCaptioner``).
    ``segmenter`` None: no mask (Eq. 4 becomes a global distance; an ablation). ``settings``: the ``optimizer``
    group (:class:`OptimSettings`), ``cutouts``: its ``augment`` views (:class:`Cutouts`), ``edit``: the task's
    real-image block (:class:`EditSettings`; each method's subclass of it holds its defaults)."""

    edit_type = EditSettings
    captioned = False
    """Whether the paper captions the image (vce): such a method warns when the template stands in (an ablation)."""

    def __init__(self, gen, clf: Classifier, segmenter: Segmenter | None = None, captioner: Captioner | None = None,
                 settings: OptimSettings | None = None, cutouts: Cutouts | None = None,
                 edit: EditSettings | None = None):
        edit = edit if edit is not None else self.edit_type()
        if settings is None or cutouts is None:  # the CLI's defaults: conf/optimizer/adam.yaml
            adam, augment = optimizer_settings("adam")
            settings = settings if settings is not None else adam
            cutouts = cutouts if cutouts is not None else self._default_cutouts(edit, augment)
        sampler = _sampler(gen, settings)
        if segmenter is None and self.captioned:  # the CLI's segmentation=none warning (vce), for Python callers
            warnings.warn("segmenter=None — no foreground mask: Eq. 4 becomes a global distance and the background "
                          "is not blended, an ablation; the paper segments with HQ-SAM (pass "
                          "segmenter=digin.load_segmenter(\"sam_hq\"))", UserWarning, stacklevel=2)
        segmenter = segmenter if segmenter is not None else NoSegmenter(device=sampler.sd.device)
        if captioner is None and self.captioned:  # the CLI's captioner=none warning, for Python callers
            warnings.warn("captioner=None — the caption is only the template (\"an image of a <class>\"), an "
                          "ablation; the paper inverts a caption of the image (pass "
                          "captioner=digin_cli.captioning.HFCaptioner(...))", UserWarning, stacklevel=2)
        editor = RealImageEditor(sampler.sd, sampler, segmenter, _MemoryCache(), sd_key="api",
                                 inner_steps=edit.inner_steps, early_stop=edit.early_stop, mask_steps=edit.mask_steps,
                                 max_injection=max(edit.injections))
        self.rng = torch.Generator(device=sampler.sd.device)  # reseeded by each verb's seed=
        self._init(clf, Preparer(editor, captioner or TemplateCaptioner()), edit, settings,
                   Cutouts(cutouts.num, cutouts.power, cutouts.noise_sd, generator=self.rng))

    @classmethod
    def from_parts(cls, clf: Classifier, preparer: Preparer, edit: EditSettings, settings: OptimSettings,
                   cutouts: Cutouts | None):
        """The method over a run's editor, caption / inversion cache and cutouts (the CLI tasks: ``run_items``
        reseeds the run's generator, which the cutouts draw from, per item)."""
        method = cls.__new__(cls)
        method.rng = None
        method._init(clf, preparer, edit, settings, cutouts)
        return method

    def _init(self, clf, preparer, edit, settings, cutouts):
        self.clf, self.prepare, self.edit_settings, self.settings = clf, preparer, edit, settings
        self.editor = preparer.editor
        self.device = self.editor.sd.device
        self.cutouts = cutouts

    def _default_cutouts(self, edit: EditSettings, augment: Cutouts) -> Cutouts:
        return augment  # the optimizer group's views (vce: optimizer.augment)

    @property
    def segmenter_name(self) -> str:
        return str(getattr(self.editor.segmenter, "name", "none"))

    def _read(self, image, seed: int | None) -> tuple[InputImage, torch.Tensor]:
        """The image as the CLI reads it, its class probabilities, and the random state reset from ``seed``."""
        item = as_input(image, self.editor.sd.resolution, self.edit_settings.crop_fraction)
        if seed is not None:
            seed_everything(seed)
            if self.rng is not None:
                self.rng.manual_seed(seed)
        return item, self.probs(item)

    def probs(self, item: InputImage) -> torch.Tensor:
        with torch.no_grad():
            return self.clf(item.image.to(self.device)).softmax(-1)[0].cpu()

    def class_index(self, name) -> int:
        """A class index or (WordNet) name of the classifier's label set."""
        return resolve_class(name, self.clf.class_names)

    def peak_memory(self) -> float:
        return peak_memory_mb(self.device)
