"""Class names and turning a user's ``target=`` into a class index.

The ImageNet names come from open_clip's wheel (short, human-readable, e.g. 'red fox'), so they work offline and
match the names the zero-shot CLIP classifier is built from.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

from digin_cli.errors import DiginError, suggest


@lru_cache(maxsize=1)
def _imagenet_names() -> tuple[str, ...]:
    from open_clip.zero_shot_metadata import IMAGENET_CLASSNAMES

    return tuple(IMAGENET_CLASSNAMES)


def imagenet_class_names() -> list[str]:
    """The 1000 ImageNet class names, index-aligned with ImageNet-1k logits."""
    return list(_imagenet_names())


def _normalise(name: str) -> str:
    # Shell users write red_fox to avoid quoting; treat it as 'red fox'.
    return " ".join(name.replace("_", " ").lower().split())


def resolve_class(name_or_index: int | str, class_names: Sequence[str]) -> int:
    """Return the class index for an int, a digit string or a (case-insensitive) class name."""
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

    wanted = _normalise(text)
    hits = [i for i, c in enumerate(class_names) if _normalise(c) == wanted]
    if len(hits) == 1:
        return hits[0]
    if hits:
        # ImageNet really has two 'missile' and two 'sunglasses' classes; guessing would silently pick one.
        raise DiginError(
            f"class '{text}' is ambiguous for this classifier (indices {', '.join(map(str, hits))}) — pass the index"
        )
    raise DiginError(
        f"unknown class '{text}' for this classifier{suggest(text.replace('_', ' '), class_names)}"
        f" — pass a class name from the classifier's list or an index 0..{n - 1}"
    )
