"""Turning the user's target class into an index, with helpful errors; label sets from config values."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml
from hydra.core.override_parser.overrides_parser import OverridesParser

from digin_cli.classifiers.classnames import (imagenet_class_names, is_imagenet, load_class_names, readable,
                                              resolve_class)
from digin_cli.errors import DiginError

ROOT = Path(__file__).resolve().parents[2]

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


@pytest.mark.parametrize("query,index", [
    ("head cabbage", 936), ("tench, Tinca tinca", 0), ("Tinca tinca", 0), ("projectile, missile", 744),
    ("projectile", 744), ("n07714571", 936), ("n03773504", 657), ("sunglass", 836), ("dark glasses", 837),
    ("steel arch bridge", 821)])
def test_imagenet_resolves_synset_words_descriptions_and_wordnet_ids(query, index):
    assert resolve_class(query, NAMES) == index


def test_own_names_win_over_synset_words_of_other_classes():
    # 'cardigan' is open_clip's name of 474 and also a WordNet word of the Cardigan corgi (264).
    assert resolve_class("cardigan", NAMES) == 474


@pytest.mark.parametrize("name,candidates", [("missile", ["657 'missile' (n03773504", "744 'missile' (n04008634"]),
                                             ("sunglasses", ["836 ", "837 "]),
                                             ("crane", ["134 'crane bird'", "517 'construction crane'"])])
def test_ambiguous_names_list_the_candidates_with_indices(name, candidates):
    with pytest.raises(DiginError, match="ambiguous") as e:
        resolve_class(name, NAMES)
    assert all(c in str(e.value) for c in candidates) and "\n" not in str(e.value)


def test_synset_words_only_apply_to_imagenet_label_sets():
    names = [f"c{i}" for i in range(999)] + ["tench"]
    assert not is_imagenet(names)
    with pytest.raises(DiginError, match="unknown class 'n07714571'"):
        resolve_class("n07714571", names)


def test_imagenet_label_set_in_synset_descriptions_is_recognised():
    from timm.data import ImageNetInfo

    info = ImageNetInfo()
    described = [info.index_to_description(i) for i in range(1000)]
    assert is_imagenet(NAMES) and is_imagenet(described)
    assert resolve_class("red fox", described) == 277 and resolve_class("head cabbage", described) == 936


def test_duplicate_imagenet_names_are_ambiguous_not_guessed():
    with pytest.raises(DiginError, match="657 .*744"):
        resolve_class("missile", NAMES)


def test_small_label_sets():
    names = ["cat", "dog"]
    assert resolve_class("DOG", names) == 1
    with pytest.raises(DiginError, match=r"0\.\.1"):
        resolve_class(2, names)


def test_readable_turns_label_underscores_into_words():
    assert readable("apple_pie") == "apple pie" and readable(" red  fox ") == "red fox"


def test_class_names_from_list_imagenet_text_and_json(tmp_path):
    assert load_class_names(["cat", "dog"]) == ["cat", "dog"]
    assert load_class_names("imagenet") == NAMES
    (tmp_path / "n.txt").write_text("airplane\nautomobile\nbird\n\n")
    assert load_class_names(str(tmp_path / "n.txt")) == ["airplane", "automobile", "bird"]
    (tmp_path / "l.json").write_text(json.dumps(["a", "b"]))
    assert load_class_names(str(tmp_path / "l.json")) == ["a", "b"]
    (tmp_path / "m.json").write_text(json.dumps({"1": "b", "0": "a", "2": "c"}))
    assert load_class_names(str(tmp_path / "m.json")) == ["a", "b", "c"]


@pytest.mark.parametrize("content,match", [("a\n\nb\n", "empty name at index 1"),
                                           ('{"0": "a", "2": "c"}', "missing: 1"),
                                           ('{"x": "a"}', "not class indices"),
                                           ("{broken", "not valid JSON")])
def test_bad_class_names_files_are_one_line_errors(tmp_path, content, match):
    path = tmp_path / ("names.json" if content.startswith("{") else "names.txt")
    path.write_text(content)
    with pytest.raises(DiginError, match=match) as e:
        load_class_names(str(path))
    assert "\n" not in str(e.value)


def test_missing_class_names_file_names_the_fix(tmp_path):
    with pytest.raises(DiginError, match="class names file not found.*classifier.class_names="):
        load_class_names(str(tmp_path / "nope.txt"))


# --- every class a shipped config or the README names must resolve -------------------------------------------

_CLASS_KEYS = ("classes", "targets", "image_classes", "filter_predicted", "start")
_NOT_CLASSES = {"predicted", "label"}  # task.start's keywords


def _class_values(task: dict, neuron_pairs: bool = False) -> list:
    """The class names / indices a task node holds; task=neuron's ``pairs`` are [class, neuron], vce's [class, class]."""
    values = []
    for key in _CLASS_KEYS:
        value = task.get(key)
        if value is None or (key == "start" and value in _NOT_CLASSES):
            continue
        values += value if isinstance(value, list) else [value]
    for pair in task.get("pairs") or []:
        values += list(pair)[:1] if neuron_pairs else list(pair)
    return values


def _shipped_config_classes() -> list[tuple[str, object]]:
    found = []
    for path in sorted((ROOT / "conf").rglob("*.yaml")):
        text = path.read_text()
        node = yaml.safe_load(text) or {}
        task = node.get("task") if path.parent.name != "task" else node
        neuron = path == ROOT / "conf" / "task" / "neuron.yaml" or "override /task: neuron\n" in text
        if isinstance(task, dict):
            found += [(str(path.relative_to(ROOT)), v) for v in _class_values(task, neuron)]
    return found


_README_OVERRIDE = re.compile(r"task\.(classes|targets|image_classes|filter_predicted|start|pairs)=('[^']*'|\S+)")


def _readme_classes() -> list[tuple[str, object, list[str]]]:
    """(command, class, label set) for every class a command in the README or docs/ names; commands on a user's own
    classifier use the label set their names file holds (a test asset with the same file name)."""
    found = []
    text = "\n".join(p.read_text() for p in [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))])
    for line in text.replace("\\\n", " ").splitlines():  # join continued lines
        if "digin " not in line:
            continue
        overrides = _README_OVERRIDE.findall(line)
        own = re.search(r"classifier\.class_names=(\S+)", line)
        names = NAMES
        if own and overrides:
            names = load_class_names(str(ROOT / "tests" / "assets" / Path(own.group(1)).name))
        for key, raw in overrides:
            # Hydra's own parser, as the command line would: sweeps ('[koala],[dugong]') give several values.
            override = OverridesParser.create().parse_overrides([f"task.{key}={raw.strip(chr(39))}"])[0]
            values = list(override.sweep_iterator()) if override.is_sweep_override() else [override.value()]
            for value in values:
                found += [(line.strip(), v, names) for v in _class_values({key: value})]
    return found


def test_every_class_in_shipped_configs_resolves():
    found = _shipped_config_classes()
    assert any(f.endswith("disagreement.yaml") for f, _ in found) and len(found) > 10
    for where, value in found:
        resolve_class(value, NAMES)  # raises with the file's value in the message
    assert resolve_class("head cabbage", NAMES) == 936  # the task default once stopped every run at once


def test_every_class_in_the_readme_resolves():
    found = _readme_classes()
    assert len(found) >= 2 and any(names is not NAMES for _, _, names in found)
    for command, value, names in found:
        resolve_class(value, names)


def test_two_label_sets_map_the_class_by_name():
    from digin_cli.classifiers.classnames import resolve_in_both, same_label_set

    food = ["apple_pie", "baklava", "waffles"]
    desserts = ["waffles", "Apple Pie"]
    assert resolve_in_both("apple pie", food, desserts) == (0, 1)
    assert resolve_in_both(2, food, desserts) == (2, 0)  # an index picks the first set's class, mapped by name
    assert resolve_in_both("red fox", NAMES, list(NAMES)) == (277, 277) and same_label_set(NAMES, list(NAMES))
    assert not same_label_set(food, desserts)


def test_a_class_missing_from_one_label_set_lists_close_matches_in_each():
    from digin_cli.classifiers.classnames import resolve_in_both

    with pytest.raises(DiginError) as e:
        resolve_in_both("baklav", ["apple_pie", "baklava"], ["baklawa", "waffles"], keys=("classifier", "classifier2"))
    msg = str(e.value)
    assert "classifier: unknown class 'baklav'" in msg and "'baklava'" in msg
    assert "classifier2: unknown class 'baklav'" in msg and "'baklawa'" in msg and "\n" not in msg
    with pytest.raises(DiginError, match="classifier2: unknown class 'baklava'"):
        resolve_in_both("baklava", ["apple_pie", "baklava"], ["waffles"])
