"""Real images as inputs for visual counterfactuals: one file, a folder of files, or ImageNet's validation set.

Every image is read and prepared by :mod:`digin_cli.data.prepare` (the DiG-IN authors' resize and centre crop,
``task.crop_fraction``), which also reports unreadable files.

:func:`load_inputs` decodes and preprocesses every selected image before it returns, and :func:`verify_images` decodes
files that are streamed later (feature statistics); the unreadable ones are reported together, in one line naming a
few and the count, before a job writes anything, or skipped (``task.skip_unreadable``) and handed back to the caller.
"""

from __future__ import annotations

import hashlib
import logging
import operator
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from digin_cli.data.prepare import (CROP_FRACTION, Unreadable, decode, preprocess, read_all, short_side,
                                    unreadable_error, verify_images)
from digin_cli.errors import DiginError
from digin_cli.io.writer import slug

__all__ = ["CROP_FRACTION", "IMAGE_EXTENSIONS", "InputImage", "class_image_files", "image_batches", "image_files",
           "load_inputs", "preprocess", "short_side", "unreadable_error", "verify_images"]

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".JPEG")
IMAGENET_VAL = "imagenet_val"  # the `source` value that selects paths.imagenet_val
_SET_IMAGENET = "set paths.imagenet_val=/path/to/imagenet/val (class subfolders)"

# folder (resolved, as str) -> (sorted class folder names, sorted (file path, label) pairs). ImageNet val holds 50k
# files: it is listed once per process, however many jobs or calls ask for it.
_IMAGENET_LISTINGS: dict[str, tuple[tuple[str, ...], tuple[tuple[Path, int], ...]]] = {}


@dataclass(eq=False)
class InputImage:
    """One preprocessed input image."""

    image: torch.Tensor = field(repr=False)  # (1, 3, R, R) float32 in [0, 1], CPU
    name: str  # filesystem-friendly id: the slugged file stem (made unique in a folder), or val_{index:05d}
    path: Path
    label: int | None = None  # ground-truth class index when known (ImageNet val)
    index: int | None = None  # position in the ImageNet val listing (ImageNet val only)

    @property
    def content_hash(self) -> str:
        """First 16 hex chars of the SHA-256 of the preprocessed image's uint8 bytes: a cache key for its content."""
        pixels = (self.image.detach().cpu().clamp(0, 1) * 255).round().to(torch.uint8).contiguous()
        return hashlib.sha256(pixels.numpy().tobytes()).hexdigest()[:16]


# --- reading --------------------------------------------------------------------------------------------------


def _is_image_name(name: str, extensions: Iterable[str]) -> bool:
    """Not hidden and ending in one of ``extensions`` (compared case-insensitively: '.PNG' counts as '.png')."""
    if name.startswith("."):
        return False
    suffix = os.path.splitext(name)[1].lower()
    return bool(suffix) and suffix in {e.lower() for e in extensions}


def _accepted(extensions: Sequence[str]) -> str:
    return ", ".join(dict.fromkeys(e.lower() for e in extensions))


def _unique_names(stems: Sequence[str]) -> list[str]:
    """Slug each stem; a repeated slug ('a.png', 'a.jpg', 'A.png') gets '_2', '_3', ... in listing order."""
    names: list[str] = []
    taken: set[str] = set()
    for stem in stems:
        base = name = slug(stem)
        k = 2
        while name in taken:
            name = f"{base}_{k}"
            k += 1
        taken.add(name)
        names.append(name)
    return names


def _from_file(path: Path, resolution: int, extensions: Sequence[str], crop_fraction: float, skip: bool,
               skipped: list | None) -> list[InputImage]:
    if not _is_image_name(path.name, extensions):
        raise DiginError(f"not an image file: {path} (accepted: {_accepted(extensions)}) — "
                         f"pass task.images=<image file or folder of images>")
    images = read_all([path], resolution, crop_fraction, "pass a valid image as task.images", skip, skipped)
    return [InputImage(image=images[path], name=_unique_names([path.stem])[0], path=path)] if images else []


def _from_folder(folder: Path, resolution: int, extensions: Sequence[str], crop_fraction: float, skip: bool,
                 skipped: list | None) -> list[InputImage]:
    with os.scandir(folder) as entries:
        files = sorted(e.name for e in entries if _is_image_name(e.name, extensions) and e.is_file())
    if not files:
        hint = ""
        with os.scandir(folder) as entries:
            if any(e.is_dir() and not e.name.startswith(".") for e in entries):
                hint = f"; for an ImageNet-style folder of class subfolders set paths.imagenet_val={folder}"
        raise DiginError(f"no images in {folder} (non-recursive; accepted: {_accepted(extensions)}) — "
                         f"put images there or pass task.images=<image file or folder>{hint}")
    paths = [folder / f for f in files]
    fix = "remove or replace those files, or pass another task.images"
    images = read_all(paths, resolution, crop_fraction, fix, skip, skipped)  # all decoded before anything returns
    # Names come from the whole listing: an image keeps its folder name whether or not a bad file is skipped.
    return [InputImage(image=images[p], name=name, path=p)
            for name, p in zip(_unique_names([p.stem for p in paths]), paths) if p in images]


def _imagenet_listing(folder: Path, extensions: Sequence[str]) -> tuple[tuple[str, ...], tuple[tuple[Path, int], ...]]:
    """Sorted class folders and the (file, label) list in torchvision ``ImageFolder`` order, listed once per folder.

    Labels are positions among the sorted class folders (for ImageNet's 1000 WordNet-id folders, the standard class
    indices). Unlike ``ImageFolder`` it does not recurse into class folders and skips hidden files and folders.
    """
    key = str(folder.resolve())
    listing = _IMAGENET_LISTINGS.get(key)
    if listing is not None:
        return listing
    with os.scandir(folder) as entries:
        classes = tuple(sorted(e.name for e in entries if e.is_dir() and not e.name.startswith(".")))
    if not classes:
        raise DiginError(f"{folder} has no class subfolders (ImageNet layout: one folder per WordNet id, e.g. "
                         f"n01440764/ILSVRC2012_val_00000293.JPEG) — sort the val images into class folders and "
                         f"{_SET_IMAGENET}")
    items: list[tuple[Path, int]] = []
    for label, wnid in enumerate(classes):
        with os.scandir(folder / wnid) as entries:
            names = sorted(e.name for e in entries if _is_image_name(e.name, extensions) and e.is_file())
        items.extend((folder / wnid / n, label) for n in names)
    if not items:
        raise DiginError(f"no images in the {len(classes)} class folders of {folder} (accepted: "
                         f"{_accepted(extensions)}) — {_SET_IMAGENET}")
    listing = (classes, tuple(items))
    _IMAGENET_LISTINGS[key] = listing
    return listing


def _select(indices: Iterable[int], n: int, folder: Path) -> list[int]:
    chosen: list[int] = []
    for raw in indices:
        try:
            i = operator.index(raw)
        except TypeError:
            raise DiginError(f"image index {raw!r} is not an integer — pass task.indices=[0,1,...]") from None
        if not 0 <= i < n:
            raise DiginError(f"index {i} out of range: {folder} holds {n} images (0..{n - 1}) — "
                             f"pick task.indices within 0..{n - 1}")
        if i not in chosen:  # a repeated index would write the same item twice
            chosen.append(i)
    return chosen


def _from_imagenet(folder: Path, resolution: int, indices: Iterable[int] | None,
                   class_names: Sequence[str] | None, extensions: Sequence[str], crop_fraction: float, skip: bool,
                   skipped: list | None) -> list[InputImage]:
    classes, items = _imagenet_listing(folder, extensions)
    if class_names is not None and len(class_names) != len(classes):
        raise DiginError(f"{folder} has {len(classes)} class folders but the classifier has {len(class_names)} "
                         f"classes, so folder positions are not its labels — {_SET_IMAGENET} with one folder per "
                         f"class")
    if indices is None:
        gib = len(items) * 3 * resolution * resolution * 4 / 2**30
        log.warning("no indices given: loading all %d images of %s (about %.1f GiB in memory at %d px); "
                    "pass task.indices=[...] to pick some", len(items), folder, gib, resolution)
        chosen = list(range(len(items)))
    else:
        chosen = _select(indices, len(items), folder)
    fix = f"remove or replace those files in {folder}, or pick other task.indices"
    images = read_all([items[i][0] for i in chosen], resolution, crop_fraction, fix, skip, skipped)
    return [InputImage(image=images[items[i][0]], name=f"val_{i:05d}", path=items[i][0], label=items[i][1], index=i)
            for i in chosen if items[i][0] in images]


def load_inputs(source: str | os.PathLike | None, resolution: int, imagenet_val: str | os.PathLike | None = None,
                indices: Iterable[int] | None = None, class_names: Sequence[str] | None = None,
                extensions: Sequence[str] = IMAGE_EXTENSIONS, crop_fraction: float = CROP_FRACTION,
                skip_unreadable: bool = False, skipped: list | None = None) -> list[InputImage]:
    """Load and preprocess the input images a task works on.

    - ``source`` an image file: that image (label None);
    - ``source`` a folder: its images (non-recursive, sorted by name, hidden files and other extensions skipped);
    - ``source`` None or ``"imagenet_val"``: the images at ``indices`` of the ImageNet-layout folder
      ``imagenet_val`` (``ImageFolder`` order, labels = class folder positions; ``indices=None`` loads all, with a
      warning). If ``class_names`` is given, the folder must hold exactly that many class folders.

    ``indices`` applies to the ImageNet mode only (a warning says it is ignored otherwise). Extensions match
    case-insensitively. Every selected image is decoded before this returns; problems raise :class:`DiginError`,
    all unreadable files in one line, or, with ``skip_unreadable``, those are left out and appended to ``skipped``
    as ``(path, reason)``. ``crop_fraction``: see the module docstring.
    """
    opts = dict(crop_fraction=crop_fraction, skip=skip_unreadable, skipped=skipped)
    if source is not None and str(source) not in ("", IMAGENET_VAL):
        path = Path(os.path.expanduser(str(source)))
        if indices is not None:
            log.warning("task.indices applies to paths.imagenet_val only; ignored for task.images=%s", path)
        if path.is_dir():
            return _from_folder(path, resolution, extensions, **opts)
        if path.is_file():
            return _from_file(path, resolution, extensions, **opts)
        raise DiginError(f"image not found: {path} — pass task.images=<file or folder>")
    if imagenet_val is None or str(imagenet_val) == "":
        if source is None or str(source) == "":
            raise DiginError(f"no input images given — pass task.images=<file or folder>, or {_SET_IMAGENET}")
        raise DiginError(f"task.images=imagenet_val but paths.imagenet_val is unset — {_SET_IMAGENET}")
    folder = Path(os.path.expanduser(str(imagenet_val)))
    if not folder.is_dir():
        raise DiginError(f"ImageNet val folder not found: {folder} — {_SET_IMAGENET}")
    return _from_imagenet(folder, resolution, indices, class_names, extensions, **opts)


def imagenet_indices_of_classes(imagenet_val: str | os.PathLike | None, labels: Iterable[int], per_class: int,
                                extensions: Sequence[str] = IMAGE_EXTENSIONS) -> list[int]:
    """Indices of the first ``per_class`` images of each class in ``labels`` (ImageNet-layout folder order)."""
    if imagenet_val is None or str(imagenet_val) == "":
        raise DiginError(f"selecting images by class needs the ImageNet validation folder — {_SET_IMAGENET}")
    folder = Path(os.path.expanduser(str(imagenet_val)))
    if not folder.is_dir():
        raise DiginError(f"ImageNet validation folder not found: {folder} — {_SET_IMAGENET}")
    wanted, taken, chosen = set(labels), {}, []
    for i, (_, label) in enumerate(_imagenet_listing(folder, extensions)[1]):
        if label in wanted and taken.get(label, 0) < per_class:
            chosen.append(i)
            taken[label] = taken.get(label, 0) + 1
    return chosen


# --- streaming many images (feature statistics) -------------------------------------------------------------------


def image_files(folder: str | os.PathLike, what: str, extensions: Sequence[str] = IMAGE_EXTENSIONS) -> list[Path]:
    """The image files of ``folder`` (non-recursive, sorted, hidden files skipped), listed without decoding.

    ``what`` names the setting the folder came from, for the one-line error when it is missing or holds no images.
    """
    path = Path(os.path.expanduser(str(folder)))
    if not path.is_dir():
        raise DiginError(f"{what} folder not found: {path} — set {what}=<folder of images>")
    files = _list_images(path, extensions)
    if not files:
        raise DiginError(f"no images in {path} ({what}; non-recursive, accepted: {_accepted(extensions)}) — put "
                         f"images there or set {what}=<folder of images>")
    return files


def _list_images(folder: Path, extensions: Sequence[str]) -> list[Path]:
    with os.scandir(folder) as entries:
        return [folder / n for n in sorted(e.name for e in entries if _is_image_name(e.name, extensions)
                                           and e.is_file())]


def class_image_files(root: str | os.PathLike | None, label: int, class_names: Sequence[str],
                      what: str = "paths.imagenet_train",
                      extensions: Sequence[str] = IMAGE_EXTENSIONS) -> list[Path]:
    """The images of class ``label`` in an ImageNet-layout folder (one subfolder per class, sorted position = label).

    Lists only the class's own folder (ImageNet train holds 1.28M files; the other classes are never listed).
    """
    name = class_names[label]
    if root is None or str(root) == "":
        raise DiginError(f"class statistics for '{name}' need its training images but {what} is unset — set "
                         f"{what}=/path/to/imagenet/train (one subfolder per class)")
    folder = Path(os.path.expanduser(str(root)))
    if not folder.is_dir():
        raise DiginError(f"{what} folder not found: {folder} — set {what}=/path/to/imagenet/train")
    with os.scandir(folder) as entries:
        classes = sorted(e.name for e in entries if e.is_dir() and not e.name.startswith("."))
    if len(classes) != len(class_names):
        raise DiginError(f"{folder} has {len(classes)} class folders but the classifier has {len(class_names)} "
                         f"classes, so folder positions are not its labels — set {what} to a folder with one "
                         "subfolder per class")
    files = _list_images(folder / classes[label], extensions)
    if not files:
        raise DiginError(f"class '{name}' has no images: {folder / classes[label]} is empty (accepted: "
                         f"{_accepted(extensions)}) — put its images there or set {what} to a complete folder")
    return files


def image_batches(paths: Sequence[Path], resolution: int, batch_size: int,
                  crop_fraction: float = CROP_FRACTION) -> Iterator[torch.Tensor]:
    """``(B, 3, R, R)`` batches of ``paths`` in order, read and prepared as :func:`load_inputs` does (so real images
    reach a classifier as generated ones do); only one batch is in memory at a time."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    for start in range(0, len(paths), batch_size):
        try:
            yield torch.cat([decode(Path(p), resolution, crop_fraction) for p in paths[start:start + batch_size]])
        except Unreadable as e:  # changed since verify_images checked it, or a caller that did not check
            raise unreadable_error([(e.path, e.reason)], "remove or replace that file") from None
