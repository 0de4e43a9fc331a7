"""Class names: where a classifier's label set comes from, and turning a name someone typed into a class index.

The ImageNet names come from open_clip's wheel (short, human-readable, e.g. 'red fox'), so they work offline and
match the names the zero-shot CLIP classifier is built from. For ImageNet label sets people also type the WordNet
words of the synset ('head cabbage', 'projectile', 'Tinca tinca') or its id ('n07714571'); those come from the
synset descriptions timm ships (:class:`timm.data.ImageNetInfo`), offline too.

Any other label set (a user's CIFAR-10 network, a Hugging Face Food-101 model) resolves against its own names.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping, Sequence
from functools import lru_cache
from pathlib import Path

from digin_cli.errors import DiginError, suggest

_WNID = re.compile(r"^n\d{8}$")
CLASS_NAMES_FIX = ("pass classifier.class_names= a list, a text file (one name per line), a JSON list or "
                   "{index: name} mapping, or imagenet")


@lru_cache(maxsize=1)
def _imagenet_names() -> tuple[str, ...]:
    from open_clip.zero_shot_metadata import IMAGENET_CLASSNAMES

    return tuple(IMAGENET_CLASSNAMES)


def imagenet_class_names() -> list[str]:
    """The 1000 ImageNet class names, index-aligned with ImageNet-1k logits."""
    return list(_imagenet_names())


@lru_cache(maxsize=1)
def _synsets() -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(WordNet ids, descriptions such as 'projectile, missile'), index-aligned with ImageNet-1k logits."""
    from timm.data import ImageNetInfo

    info = ImageNetInfo()
    wnids = tuple(info.label_names())
    return wnids, tuple(info.index_to_description(i) for i in range(len(wnids)))


def _normalise(name: str) -> str:
    # Shell users write red_fox to avoid quoting; treat it as 'red fox'.
    return " ".join(str(name).replace("_", " ").lower().split())


def _lemmas(description: str) -> list[str]:
    return [w for w in (_normalise(p) for p in description.split(",")) if w]


@lru_cache(maxsize=1)
def _imagenet_index() -> dict[str, frozenset[int]]:
    """Every WordNet word, full description and id of an ImageNet synset -> the class indices it names."""
    wnids, descriptions = _synsets()
    index: dict[str, set[int]] = {}
    for i, (wnid, description) in enumerate(zip(wnids, descriptions)):
        for word in {wnid, _normalise(description), *_lemmas(description)}:
            index.setdefault(word, set()).add(i)
    return {k: frozenset(v) for k, v in index.items()}


def is_imagenet(class_names: Sequence[str]) -> bool:
    """Whether ``class_names`` is the ImageNet-1k label set, in open_clip's short names or the synset descriptions
    (Hugging Face ImageNet models label classes 'tench, Tinca tinca')."""
    if len(class_names) != 1000:
        return False
    short = _imagenet_names()
    _, descriptions = _synsets()
    return all(_normalise(n) in (_normalise(s), _normalise(d)) for n, s, d in zip(class_names, short, descriptions))


def readable(name: str) -> str:
    """A class name as words for a prompt or caption ('apple_pie' -> 'apple pie'); labels often use underscores."""
    return " ".join(str(name).replace("_", " ").split())


def _candidates(hits: Sequence[int], class_names: Sequence[str], imagenet: bool) -> str:
    if imagenet:
        wnids, descriptions = _synsets()
        return ", ".join(f"{i} '{class_names[i]}' ({wnids[i]}: {descriptions[i]})" for i in hits)
    return ", ".join(f"{i} '{class_names[i]}'" for i in hits)


def resolve_class(name_or_index: int | str, class_names: Sequence[str]) -> int:
    """Return the class index for an int, a digit string or a (case-insensitive) class name.

    A name is first looked up among the classifier's own names. For an ImageNet label set it may also be any
    WordNet word of the class's synset, its whole description, or its WordNet id. A name that fits several classes
    is an error listing them with their indices; guessing would silently explain the wrong class.
    """
    n = len(class_names)
    index: int | None = None
    if isinstance(name_or_index, bool):  # bool is an int subclass; True is never a meant class
        raise DiginError(f"class must be a name or an index 0..{n - 1}, got {name_or_index!r}")
    if isinstance(name_or_index, int):
        index = name_or_index
    else:
        text = str(name_or_index).strip()
        if text.lstrip("-").isdigit():
            index = int(text)
    if index is not None:
        if not 0 <= index < n:
            raise DiginError(f"class index {index} is out of range for this classifier — use an index 0..{n - 1}")
        return index

    imagenet = is_imagenet(class_names)
    wanted = _normalise(text)
    hits = [i for i, c in enumerate(class_names) if _normalise(c) == wanted]
    if not hits and imagenet:
        key = text if _WNID.match(text) else wanted
        hits = sorted(_imagenet_index().get(key, ()))
    if len(hits) == 1:
        return hits[0]
    if hits:
        # ImageNet really has two 'missile' and two 'sunglasses' classes; the synset words tell them apart.
        raise DiginError(f"class '{text}' is ambiguous for this classifier: {_candidates(hits, class_names, imagenet)}"
                         f" — pass the index{' or the WordNet id' if imagenet else ''} instead")
    choices = list(class_names)
    if imagenet:
        choices += [w for w in _imagenet_index() if not _WNID.match(w)]
    raise DiginError(
        f"unknown class '{text}' for this classifier{suggest(wanted, choices)}"
        f" — pass a class name from the classifier's list or an index 0..{n - 1}"
    )


def same_label_set(a: Sequence[str], b: Sequence[str]) -> bool:
    """Whether two classifiers' logits mean the same classes index for index (identical names, or both ImageNet-1k
    in either naming)."""
    return list(a) == list(b) or (is_imagenet(a) and is_imagenet(b))


def resolve_in_both(name_or_index: int | str, names: Sequence[str], other: Sequence[str],
                    keys: tuple[str, str] = ("classifier", "classifier2")) -> tuple[int, int]:
    """The class's index in each of two label sets: one index when the sets agree, otherwise matched by name (an
    index picks the first set's class, whose name is then looked up in the second)."""
    if same_label_set(names, other):
        index = resolve_class(name_or_index, names)
        return index, index
    problems = []
    try:
        first = resolve_class(name_or_index, names)
    except DiginError as e:
        first = None
        problems.append(f"{keys[0]}: {str(e).split(' — ')[0]}")
    # An index (or a synonym) picks the first set's class; the second set is searched for that class's name.
    query = names[first] if first is not None else str(name_or_index)
    try:
        second = resolve_class(query, other) if not query.strip().lstrip("-").isdigit() else None
        if second is None:  # a class literally named '3' must not become index 3 of the other set
            raise DiginError(f"unknown class '{query}' for this classifier{suggest(query, other)}")
    except DiginError as e:
        problems.append(f"{keys[1]}: {str(e).split(' — ')[0]}")
    if problems:
        raise DiginError(f"class '{name_or_index}' must name a class in both label sets ({'; '.join(problems)}) — "
                         "pass a name both classifiers know")
    return first, second


def load_class_names(spec: str | Sequence[str] | Mapping | None) -> list[str]:
    """A label set from a config value: a list of names, ``imagenet``, or a path to a text file (one name per line)
    or a JSON file holding a list or an ``{index: name}`` mapping."""
    if spec is None:
        raise DiginError(f"classifier.class_names is not set — {CLASS_NAMES_FIX}")
    if isinstance(spec, Mapping):
        return _from_mapping(spec, "classifier.class_names")
    if not isinstance(spec, str):
        names = [str(n) for n in spec]
    elif spec.strip().lower() == "imagenet":
        return imagenet_class_names()
    else:
        names = _read_names_file(Path(os.path.expanduser(spec)))
    if not names:
        raise DiginError(f"classifier.class_names is empty — {CLASS_NAMES_FIX}")
    blank = [i for i, n in enumerate(names) if not str(n).strip()]
    if blank:
        raise DiginError(f"classifier.class_names has an empty name at index {blank[0]} — every class needs a name")
    return [str(n).strip() for n in names]


def _from_mapping(mapping: Mapping, where: str) -> list[str]:
    try:
        by_index = {int(k): str(v) for k, v in mapping.items()}
    except (TypeError, ValueError):
        raise DiginError(f"{where} maps keys that are not class indices — use {{\"0\": \"name\", \"1\": ...}}"
                         ) from None
    if sorted(by_index) != list(range(len(by_index))):
        missing = sorted(set(range(len(by_index))) - set(by_index))
        raise DiginError(f"{where} must map every index 0..{len(by_index) - 1} exactly once (missing: "
                         f"{', '.join(map(str, missing[:5]))}) — fix the mapping")
    return [by_index[i] for i in range(len(by_index))]


def _read_names_file(path: Path) -> list[str]:
    if not path.is_file():
        raise DiginError(f"class names file not found: {path} — {CLASS_NAMES_FIX}")
    text = path.read_text(encoding="utf-8")
    if path.suffix.lower() == ".json":
        try:
            data = json.loads(text)
        except ValueError as e:
            raise DiginError(f"class names file {path} is not valid JSON ({e}) — {CLASS_NAMES_FIX}") from None
        if isinstance(data, Mapping):
            return _from_mapping(data, f"class names file {path}")
        if isinstance(data, list):
            return [str(n) for n in data]
        raise DiginError(f"class names file {path} holds a JSON {type(data).__name__} — {CLASS_NAMES_FIX}")
    lines = text.splitlines()
    while lines and not lines[-1].strip():  # a trailing newline is not a class
        lines.pop()
    return lines
