"""Eq. 6 decision and agreement with annotations, on synthetic masks and files with hand-computed answers."""

import csv

import pytest
import torch

from digin_cli.classifiers.classnames import imagenet_class_names, resolve_class
from digin_cli.data.annotations import Annotations, agreement, agreement_by_delta, check_delta, decide, write_agreement
from digin_cli.errors import DiginError
from digin_cli.segmentation.grounding import object_fractions

# Class A: all core (unbiased), B: all spurious (biased), C: 3 core + 2 spurious (medium).
ANNOTATED = {"A": ["core"] * 5, "B": ["spurious"] * 5, "C": ["core", "core", "core", "spurious", "spurious"]}
ANIMACY = {"A": "animate", "B": "animate", "C": "inanimate"}
PREDICTED = {"A": ["core", "core", "core", "core", "spurious"],             # 4 of 5 agree
             "B": ["core", "spurious", "spurious", "spurious", "spurious"],  # 4 of 5
             "C": ["core", "spurious", "core", "spurious", "core"]}          # features 1, 3, 4: 3 of 5


def _write(path, rows, header=("class", "feature", "label", "animacy")):
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    return path


@pytest.fixture()
def annotation_file(tmp_path):
    rows = [(c, i + 1, label, ANIMACY[c]) for c, labels in ANNOTATED.items() for i, label in enumerate(labels)]
    return _write(tmp_path / "annotations.csv", rows)


def _predicted():
    return {(c, i + 1): label for c, labels in PREDICTED.items() for i, label in enumerate(labels)}


def test_decide_on_synthetic_masks():
    masks = torch.zeros(4, 1, 8, 8)
    masks[0, 0, :4, :4] = 1   # r = 16/64 = 0.25
    masks[1, 0, :4] = 1       # 0.5
    masks[3, 0, 4:, :4] = 1   # 0.25; masks[2] is a sample where nothing was detected: r = 0
    fractions = object_fractions(masks)
    assert fractions == [0.25, 0.5, 0.0, 0.25]
    assert decide(fractions, 0.25) == (0.25, "core")  # E[r] >= δ: core (the boundary is core)
    assert decide(fractions, 0.26) == (0.25, "spurious")
    assert decide([0.0, 0.0], 0.0) == (0.0, "core") and decide([0.0, 0.0], 0.01) == (0.0, "spurious")
    assert decide([1.0], 1.0) == (1.0, "core")


@pytest.mark.parametrize("delta", [-0.1, 1.5, float("nan"), "half", None])
def test_delta_outside_unit_interval(delta):
    with pytest.raises(DiginError, match=r"task.delta must be .* in \[0, 1\]"):
        check_delta(delta)


def test_agreement_hand_computed(annotation_file, tmp_path):
    annotations = Annotations.load(annotation_file)
    assert annotations.group_columns == ["animacy"] and annotations.classes() == ["A", "B", "C"]
    assert annotations.features("C") == [1, 2, 3, 4, 5]
    assert annotations.bias_levels() == {"A": "unbiased", "B": "biased", "C": "medium"}
    rows = {(r["group"], r["value"]): r for r in agreement(_predicted(), annotations)}
    expected = {("all", "all"): (11, 15, 3), ("animacy", "animate"): (8, 10, 2),
                ("animacy", "inanimate"): (3, 5, 1), ("bias", "unbiased"): (4, 5, 1),
                ("bias", "medium"): (3, 5, 1), ("bias", "biased"): (4, 5, 1),
                ("animacy x bias", "animate / unbiased"): (4, 5, 1),
                ("animacy x bias", "animate / biased"): (4, 5, 1),
                ("animacy x bias", "inanimate / medium"): (3, 5, 1)}
    assert set(rows) == set(expected)
    for key, (agree, features, classes) in expected.items():
        assert (rows[key]["agree"], rows[key]["features"], rows[key]["classes"]) == (agree, features, classes), key
        assert rows[key]["agreement"] == pytest.approx(agree / features)
    # The bias levels are listed in their natural order.
    assert [r["value"] for r in agreement(_predicted(), annotations) if r["group"] == "bias"] == \
        ["unbiased", "medium", "biased"]
    # agreement.csv parses back to the same numbers.
    path = write_agreement(tmp_path / "agreement.csv", list(rows.values()))
    back = {(r["group"], r["value"]): r for r in csv.DictReader(path.open())}
    assert float(back[("all", "all")]["agreement"]) == pytest.approx(11 / 15)


def test_agreement_only_over_predicted_pairs(annotation_file):
    annotations = Annotations.load(annotation_file)
    predicted = {k: v for k, v in _predicted().items() if k[0] != "C"}  # C failed: nothing predicted for it
    rows = {(r["group"], r["value"]): r for r in agreement(predicted, annotations)}
    assert (rows[("all", "all")]["agree"], rows[("all", "all")]["features"]) == (8, 10)
    assert rows[("animacy", "inanimate")]["features"] == 0 and rows[("animacy", "inanimate")]["agreement"] is None


def test_classes_resolved_and_header_case(tmp_path):
    names = imagenet_class_names()
    path = _write(tmp_path / "a.csv", [("Tench", 7, "Core"), ("1", 3, "SPURIOUS")], ("Class", " Feature", "LABEL"))
    annotations = Annotations.load(path, resolve=lambda c: names[resolve_class(c, names)])
    assert [(a.cls, a.feature, a.label) for a in annotations.rows] == [("tench", 7, "core"),
                                                                        ("goldfish", 3, "spurious")]
    assert annotations.group_columns == []


@pytest.mark.parametrize("rows,header,match", [
    ([("A", 1, "maybe")], None, "line 2: unknown label 'maybe' — use core or spurious"),
    ([("A", "x", "core")], None, "line 2: feature 'x' is not a feature index"),
    ([("A", 1, "core"), ("A", 1, "spurious")], None, "line 3: class 'A' feature 1 is already annotated on line 2"),
    ([("A", 1)], ("class", "feature"), "lacks the column"),
    ([], None, "has no rows"),
    ([("", 1, "core")], None, "the class cell is empty"),
])
def test_bad_annotation_files(tmp_path, rows, header, match):
    path = _write(tmp_path / "bad.csv", rows, header or ("class", "feature", "label"))
    with pytest.raises(DiginError, match=match) as info:
        Annotations.load(path)
    assert "\n" not in str(info.value)


def test_missing_file_and_unknown_class(tmp_path):
    with pytest.raises(DiginError, match="annotation file .* does not exist"):
        Annotations.load(tmp_path / "nope.csv")
    names = imagenet_class_names()
    path = _write(tmp_path / "a.csv", [("tenchh", 1, "core")], ("class", "feature", "label"))
    with pytest.raises(DiginError, match=r"line 2: unknown class 'tenchh' .*did you mean: 'tench'"):
        Annotations.load(path, resolve=lambda c: names[resolve_class(c, names)])


def test_agreement_by_delta_hand_computed(tmp_path):
    path = _write(tmp_path / "a.csv", [("A", 1, "core"), ("A", 2, "spurious"), ("B", 1, "spurious")],
                  ("class", "feature", "label"))
    fractions = {("A", 1): [0.4, 0.2], ("A", 2): [0.1, 0.1], ("B", 1): [0.0, 0.2]}  # E[r] = 0.3, 0.1, 0.1
    rows = {r["delta"]: r for r in agreement_by_delta(fractions, Annotations.load(path), [0.0, 0.1, 0.2, 0.35])}
    # δ = 0 / 0.1: all core -> only (A, 1) agrees; δ = 0.2: (A, 1) core, the rest spurious -> all agree; δ = 0.35: none core.
    assert [(rows[d]["agree"], rows[d]["core"]) for d in (0.0, 0.1, 0.2, 0.35)] == [(1, 3), (1, 3), (3, 1), (2, 0)]
    assert rows[0.2]["agreement"] == 1.0 and rows[0.35]["agreement"] == pytest.approx(2 / 3)
