"""Eq. 6 decision and agreement with annotations, on synthetic masks and files with hand-computed answers."""

import csv

import pytest
import torch

from digin_cli.classifiers.classnames import imagenet_class_names, resolve_class
from digin_cli.data.annotations import (ANALYSIS, Annotations, agreement, agreement_by_delta, check_delta, check_folds,
                                        cross_validated_delta, decide, write_agreement)
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
    assert all(r["note"] == ANALYSIS and "not a result" in r["note"] for r in rows.values())


DELTAS = [k / 20 for k in range(21)]


def test_cross_validated_delta_finds_the_planted_threshold(tmp_path):
    # Six classes; every core feature has E[r] in [0.33, 0.47], every spurious one in [0.03, 0.18]: only
    # δ in (0.18, 0.33] separates them, so each fold, trained on the other classes, must choose δ from the grid
    # points 0.2, 0.25, 0.3 and be perfect on its held-out classes; the default δ = 0.1 is not.
    planted = {"A": [0.41, 0.07, 0.36], "B": [0.12, 0.18, 0.45], "C": [0.33, 0.47, 0.03],
               "D": [0.15, 0.39, 0.05], "E": [0.44, 0.11, 0.34], "F": [0.08, 0.13, 0.38]}
    rows = [(c, f, "core" if r > 0.3 else "spurious") for c, rs in planted.items() for f, r in enumerate(rs)]
    annotations = Annotations.load(_write(tmp_path / "a.csv", rows, ("class", "feature", "label")))
    fractions = {(c, f): [r - 0.02, r + 0.02] for c, rs in planted.items() for f, r in enumerate(rs)}
    cv = cross_validated_delta(fractions, annotations, DELTAS, folds=3)
    chosen = [float(d) for d in cv["delta"].split(";")]
    assert len(chosen) == 3 and all(0.18 < d <= 0.33 for d in chosen)
    assert (cv["agreement"], cv["agreement_sd"], cv["agreement_min"], cv["folds"]) == (1.0, 0.0, 1.0, 3)
    assert (cv["agree"], cv["features"], cv["classes"]) == (18, 18, 6)
    at_default = agreement({k: decide(r, 0.1)[1] for k, r in fractions.items()}, annotations)[0]
    assert at_default["agreement"] == pytest.approx(13 / 18)  # spurious 0.12, 0.18, 0.15, 0.11, 0.13 called core


def test_cross_validated_delta_is_scored_on_held_out_classes_only(tmp_path):
    # A: core 0.3, spurious 0.1 (best δ in (0.1, 0.3]); B: core 0.6, spurious 0.4 (best δ in (0.4, 0.6]).
    # In-sample the best δ agrees on 3 of 4; each class's δ is wrong for the other, so 2-fold CV gets 1/2 per fold.
    path = _write(tmp_path / "a.csv", [("A", 1, "core"), ("A", 2, "spurious"), ("B", 1, "core"),
                                       ("B", 2, "spurious")], ("class", "feature", "label"))
    annotations = Annotations.load(path)
    fractions = {("A", 1): [0.31], ("A", 2): [0.11], ("B", 1): [0.61], ("B", 2): [0.41]}
    assert max(r["agreement"] for r in agreement_by_delta(fractions, annotations, DELTAS)) == 0.75
    cv = cross_validated_delta(fractions, annotations, DELTAS, folds=2)
    # Fold 0 holds out A and chooses on B: (0.41, 0.61] has 0.45, 0.5, 0.55, 0.6 -> the middle one, 0.55; fold 1
    # holds out B and chooses on A: 0.15, 0.2, 0.25, 0.3 -> 0.25.
    assert cv["delta"] == "0.55;0.25"
    assert (cv["agreement"], cv["agreement_sd"], cv["agree"], cv["features"]) == (0.5, 0.0, 2, 4)


def test_cross_validated_delta_with_fewer_classes_than_folds(tmp_path):
    rows = [("A", 1, "core"), ("A", 2, "spurious"), ("B", 1, "core"), ("B", 2, "spurious"), ("C", 1, "core")]
    annotations = Annotations.load(_write(tmp_path / "a.csv", rows, ("class", "feature", "label")))
    fractions = {("A", 1): [0.5], ("A", 2): [0.0], ("B", 1): [0.6], ("B", 2): [0.1], ("C", 1): [0.2]}
    cv = cross_validated_delta(fractions, annotations, DELTAS, folds=5)
    # k is reduced to the 3 classes (leave one class out), and the row says so.
    assert cv["folds"] == 3 and "task.cv_folds=5 reduced to the 3 classes" in cv["value"]
    # Holding out C, A and B pick δ in (0.1, 0.5] (middle: 0.3) and call C's 0.2 spurious: 0 of 1; A and B: 2 of 2.
    assert cv["agreement"] == pytest.approx(2 / 3) and cv["agreement_min"] == 0.0 and cv["agreement_max"] == 1.0
    assert cv["agreement_sd"] == pytest.approx(0.57735, abs=1e-5)
    # Only classes with results count: with one left there is nothing to hold out, and the row says why.
    alone = cross_validated_delta({("A", 1): [0.5]}, annotations, DELTAS, folds=5)
    assert alone["agreement"] is None and ">= 2 annotated classes" in alone["value"]


@pytest.mark.parametrize("folds", [1, 0, -3, "five", 2.5, None, True])
def test_bad_fold_counts(folds):
    with pytest.raises(DiginError, match=r"task.cv_folds must be an integer >= 2 .* task.cv_folds=5") as info:
        check_folds(folds)
    assert "\n" not in str(info.value)
    assert check_folds(5) == 5 and check_folds("3") == 3


def test_agreement_csv_carries_the_cross_validated_row(tmp_path, annotation_file):
    annotations = Annotations.load(annotation_file)
    table = [row | {"delta": 0.1} for row in agreement(_predicted(), annotations)]
    # r separates the annotated labels exactly (core 0.5, spurious 0): every held-out fold is perfect.
    fractions = {(a.cls, a.feature): [0.5 if a.label == "core" else 0.0] for a in annotations.rows}
    table.insert(1, cross_validated_delta(fractions, annotations, DELTAS, folds=3))
    back = list(csv.DictReader(write_agreement(tmp_path / "agreement.csv", table).open()))
    assert back[0]["group"] == "all" and back[0]["delta"] == "0.1" and back[0]["agreement_sd"] == ""
    assert back[1]["group"] == "all, delta cross-validated" and back[1]["folds"] == "3"
    assert float(back[1]["agreement"]) == 1.0 and float(back[0]["agreement"]) == pytest.approx(11 / 15)
