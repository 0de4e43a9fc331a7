"""Turning the user's target class into an index, with helpful errors."""

from __future__ import annotations

import pytest

from digin_cli.classifiers.classnames import imagenet_class_names, resolve_class
from digin_cli.errors import DiginError

NAMES = imagenet_class_names()


def test_imagenet_names_are_the_1000_index_aligned_classes():
    assert len(NAMES) == 1000
    assert NAMES[0] == "tench" and NAMES[1] == "goldfish" and NAMES[277] == "red fox"
    mine = imagenet_class_names()
    mine.append("x")  # callers get a copy, the cached list stays intact
    assert len(imagenet_class_names()) == 1000


@pytest.mark.parametrize(
    "query,index",
    [(277, 277), ("277", 277), (" 42 ", 42), ("red fox", 277), ("Red Fox", 277), ("red_fox", 277), ("goldfish", 1)],
)
def test_resolves_indices_digit_strings_and_names(query, index):
    assert resolve_class(query, NAMES) == index


def test_unknown_name_suggests_close_matches():
    with pytest.raises(DiginError) as e:
        resolve_class("red fx", NAMES)
    msg = str(e.value)
    assert "unknown class 'red fx'" in msg and "red fox" in msg and "0..999" in msg and "\n" not in msg


@pytest.mark.parametrize("bad", [1000, "1000", -1, "-3"])
def test_index_out_of_range_names_the_valid_range(bad):
    with pytest.raises(DiginError, match=r"0\.\.999"):
        resolve_class(bad, NAMES)


def test_duplicate_imagenet_names_are_ambiguous_not_guessed():
    with pytest.raises(DiginError, match="657, 744"):
        resolve_class("missile", NAMES)


def test_small_label_sets():
    names = ["cat", "dog"]
    assert resolve_class("DOG", names) == 1
    with pytest.raises(DiginError, match=r"0\.\.1"):
        resolve_class(2, names)
