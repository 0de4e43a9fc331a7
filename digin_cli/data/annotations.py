"""Core / spurious labels of (class, feature) pairs: decided from object fractions (DiffExplainer Eq. 6), read from
an annotation file (e.g. Salient ImageNet's), and compared (agreement overall, per group and per bias level, Fig. 6).
The paper gives no δ: besides the default δ's agreement, a δ chosen by cross-validation over classes is scored on
held-out classes only; the per-δ table is an in-sample analysis.

Annotation file: a CSV with the columns ``class`` (name or index), ``feature`` (penultimate-layer feature index) and
``label`` (``core`` | ``spurious``); every other column is a group (e.g. ``animacy`` with values animate /
inanimate), reported separately. A class's bias level is derived from the file itself, as in the paper (Sec. 4.2):
no spurious feature -> ``unbiased``, all of its annotated features (Salient ImageNet: all five) -> ``biased``,
otherwise ``medium``.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from statistics import mean, stdev

from digin_cli.errors import DiginError
from digin_cli.io.atomic import atomic_write_text

LABELS = ("core", "spurious")
BIAS_LEVELS = ("unbiased", "medium", "biased")
REQUIRED = ("class", "feature", "label")
_FIX = "give a CSV with the columns class, feature, label (core|spurious) and optional group columns"


def check_delta(delta: float) -> float:
    """δ of Eq. 6 as a float in [0, 1] (an object fraction threshold), else a DiginError."""
    try:
        value = float(delta)
    except (TypeError, ValueError):
        value = math.nan
    if not 0.0 <= value <= 1.0:  # NaN fails too
        raise DiginError(f"task.delta must be a fraction of the image in [0, 1], got {delta!r} — e.g. "
                         "task.delta=0.1")
    return value


def check_folds(folds: int) -> int:
    """k of the cross-validated δ as an int >= 2, else a DiginError."""
    text = str(folds).strip()
    value = int(text) if text.isdigit() else -1  # bools, floats and words are not a number of folds
    if value < 2:
        raise DiginError(f"task.cv_folds must be an integer >= 2 (folds of classes), got {folds!r} — e.g. "
                         "task.cv_folds=5")
    return value


def decide(fractions: Sequence[float], delta: float) -> tuple[float, str]:
    """DiffExplainer Eq. 6: ``E_z[r] >= δ`` -> core, else spurious; the expectation is the mean over the samples.

    ``fractions`` are the object fractions r of the samples (r = 0 where nothing was detected).
    Returns ``(E[r], label)``.
    """
    delta = check_delta(delta)
    if len(fractions) == 0:
        raise ValueError("decide needs the object fraction of at least one sample")
    average = float(sum(float(r) for r in fractions) / len(fractions))
    return average, ("core" if average >= delta else "spurious")


@dataclass(frozen=True)
class Annotation:
    """One annotated (class, feature) pair; ``groups`` holds the file's extra columns."""

    cls: str
    feature: int
    label: str
    groups: Mapping[str, str] = field(default_factory=dict)


@dataclass
class Annotations:
    """The rows of an annotation file, in file order, with classes resolved to the classifier's names."""

    rows: list[Annotation]
    group_columns: list[str]
    path: Path | None = None

    @classmethod
    def load(cls, path: str | Path, resolve: Callable[[str], str] | None = None) -> Annotations:
        """Read and validate an annotation CSV. ``resolve`` maps the file's class cells to canonical class names
        (raising DiginError for unknown ones); by default they are kept as written."""
        path = Path(path).expanduser()
        if not path.is_file():
            raise DiginError(f"annotation file '{path}' does not exist — {_FIX}, and pass its path")
        try:
            text = path.read_text(encoding="utf-8-sig")
        except (OSError, UnicodeDecodeError) as err:
            raise DiginError(f"cannot read annotation file '{path}' ({type(err).__name__}) — {_FIX}") from None
        reader = csv.DictReader(io.StringIO(text))
        header = [h.strip().lower() for h in (reader.fieldnames or [])]
        missing = [c for c in REQUIRED if c not in header]
        if missing:
            raise DiginError(f"annotation file '{path}' lacks the column(s) {', '.join(missing)} (found: "
                             f"{', '.join(header) or 'no header'}) — {_FIX}")
        reader.fieldnames = header
        groups = [h for h in header if h not in REQUIRED and h]
        rows, seen = [], {}
        for line, raw in enumerate(reader, start=2):
            where = f"annotation file '{path}' line {line}"
            if None in raw:
                raise DiginError(f"{where} has more cells than the header — {_FIX}")
            cells = {k: (v or "").strip() for k, v in raw.items()}
            if not any(cells.values()):
                continue  # blank line
            label = cells["label"].lower()
            if label not in LABELS:
                raise DiginError(f"{where}: unknown label '{cells['label']}' — use core or spurious")
            if not cells["feature"].isdigit():
                raise DiginError(f"{where}: feature '{cells['feature']}' is not a feature index (an integer >= 0) "
                                 "— write the penultimate-layer feature's index")
            if not cells["class"]:
                raise DiginError(f"{where}: the class cell is empty — write a class name or index")
            try:
                name = resolve(cells["class"]) if resolve else cells["class"]
            except DiginError as err:
                raise DiginError(f"{where}: {err}") from None
            key = (name, int(cells["feature"]))
            if key in seen:
                raise DiginError(f"{where}: class '{name}' feature {key[1]} is already annotated on line {seen[key]} "
                                 "— keep one row per (class, feature)")
            seen[key] = line
            rows.append(Annotation(name, key[1], label, {g: cells[g] for g in groups}))
        if not rows:
            raise DiginError(f"annotation file '{path}' has no rows — {_FIX}")
        return cls(rows, groups, path)

    def classes(self) -> list[str]:
        """Annotated classes in first-seen order."""
        return list(dict.fromkeys(a.cls for a in self.rows))

    def features(self, cls: str) -> list[int]:
        """The annotated features of one class, in file order."""
        return [a.feature for a in self.rows if a.cls == cls]

    def labels(self) -> dict[tuple[str, int], str]:
        return {(a.cls, a.feature): a.label for a in self.rows}

    def bias_levels(self) -> dict[str, str]:
        """Per class (Sec. 4.2): no spurious feature -> unbiased, all annotated features spurious -> biased, else
        medium."""
        levels = {}
        for cls in self.classes():
            labels = [a.label for a in self.rows if a.cls == cls]
            spurious = labels.count("spurious")
            levels[cls] = "unbiased" if spurious == 0 else "biased" if spurious == len(labels) else "medium"
        return levels


def agreement(predicted: Mapping[tuple[str, int], str], annotations: Annotations) -> list[dict]:
    """Agreement of predicted labels with the annotations, over the annotated pairs that have a prediction.

    One row per scope: ``all``; each value of each group column; each derived bias level; and each group value
    crossed with the bias level (the bars of the paper's Fig. 6). Columns: ``group``, ``value``, ``classes``,
    ``features`` (compared pairs), ``agree`` and ``agreement`` (``agree / features``; None when nothing compared).
    """
    levels = annotations.bias_levels()
    compared = [(a, predicted[(a.cls, a.feature)] == a.label) for a in annotations.rows
                if (a.cls, a.feature) in predicted]
    for (cls, feature), label in predicted.items():
        if label not in LABELS:
            raise ValueError(f"predicted label {label!r} for ({cls}, {feature}) is not one of {LABELS}")

    def row(group: str, value: str, members: Iterable[tuple[Annotation, bool]]) -> dict:
        members = list(members)
        agree = sum(ok for _, ok in members)
        return {"group": group, "value": value, "classes": len({a.cls for a, _ in members}),
                "features": len(members), "agree": agree,
                "agreement": round(agree / len(members), 6) if members else None}

    rows = [row("all", "all", compared)]
    scopes: list[tuple[str, Callable[[Annotation], str]]] = [
        (g, lambda a, g=g: a.groups[g]) for g in annotations.group_columns]
    scopes.append(("bias", lambda a: levels[a.cls]))
    scopes += [(f"{g} x bias", lambda a, g=g: f"{a.groups[g]} / {levels[a.cls]}") for g in annotations.group_columns]
    for group, key in scopes:
        values = list(dict.fromkeys(key(a) for a in annotations.rows))
        if group == "bias":
            values = [v for v in BIAS_LEVELS if v in values]
        rows += [row(group, v, [(a, ok) for a, ok in compared if key(a) == v]) for v in values]
    return rows


ANALYSIS = "in-sample analysis, not a result: every delta is scored on the labels it would be chosen on"


def agreement_by_delta(fractions: Mapping[tuple[str, int], Sequence[float]], annotations: Annotations,
                       deltas: Iterable[float]) -> list[dict]:
    """Overall agreement for each δ in ``deltas``, from the samples' object fractions per (class, feature).

    The paper does not report its δ; since Eq. 6 only thresholds E[r], every δ is answered from one run's r values.
    This is an analysis of how agreement depends on δ, not a result: a δ read off it is tuned on the labels it is
    scored against (:func:`cross_validated_delta` is the honest figure). Rows: ``delta``, ``features``, ``agree``,
    ``agreement``, ``core`` (how many pairs are called core), ``note`` (says so).
    """
    rows = []
    for delta in deltas:
        predicted = {key: decide(r, delta)[1] for key, r in fractions.items()}
        overall = agreement(predicted, annotations)[0]
        rows.append({"delta": round(float(delta), 6), "features": overall["features"], "agree": overall["agree"],
                     "agreement": overall["agreement"], "core": sum(v == "core" for v in predicted.values()),
                     "note": ANALYSIS})
    return rows


def _agree(fractions: Mapping[tuple[str, int], Sequence[float]], rows: Sequence[Annotation], delta: float
           ) -> tuple[int, int]:
    """(agreeing, compared) pairs among ``rows`` that have fractions, at threshold δ."""
    compared = [a for a in rows if (a.cls, a.feature) in fractions]
    return sum(decide(fractions[(a.cls, a.feature)], delta)[1] == a.label for a in compared), len(compared)


def cross_validated_delta(fractions: Mapping[tuple[str, int], Sequence[float]], annotations: Annotations,
                          deltas: Sequence[float], folds: int) -> dict:
    """Agreement at a δ chosen without the labels it is scored on (k-fold cross-validation over classes).

    The annotated classes that have results are dealt round-robin, in file order, into k folds (deterministic; a
    class's features never straddle folds, as they share one class's images). For each fold, δ is the one of
    ``deltas`` with the most agreeing pairs on the other k − 1 folds (ties: the middle of the tied values, i.e. the
    centre of the best plateau) and is scored on the held-out fold. Fewer classes than k: k is reduced to the
    number of classes (leave one class out); below 2 classes there is nothing to hold out and ``agreement`` is None.

    Returns one ``agreement.csv`` row: ``agreement`` the mean held-out agreement over folds, ``agreement_sd`` /
    ``agreement_min`` / ``agreement_max`` its spread, ``agree`` / ``features`` pooled over the held-out pairs,
    ``folds`` the k used and ``delta`` the δ chosen per fold (``;``-separated).
    """
    k_asked = check_folds(folds)
    classes = [c for c in annotations.classes()
               if any((c, f) in fractions for f in annotations.features(c))]
    k = min(k_asked, len(classes))
    reduced = f" (task.cv_folds={k_asked} reduced to the {len(classes)} classes)" if k < k_asked else ""
    row = {"group": "all, delta cross-validated", "value": f"{k}-fold over classes{reduced}",
           "classes": len(classes), "features": 0, "agree": 0, "agreement": None, "agreement_sd": None,
           "agreement_min": None, "agreement_max": None, "folds": k, "delta": ""}
    if k < 2:
        return row | {"value": "needs results for >= 2 annotated classes"}
    scores, chosen = [], []
    for j in range(k):
        held = set(classes[j::k])
        train = [a for a in annotations.rows if a.cls in classes and a.cls not in held]
        counts = [_agree(fractions, train, d)[0] for d in deltas]
        tied = [d for d, c in zip(deltas, counts) if c == max(counts)]
        delta = tied[len(tied) // 2]
        agree, compared = _agree(fractions, [a for a in annotations.rows if a.cls in held], delta)
        scores.append(agree / compared)
        chosen.append(round(float(delta), 6))
        row["agree"] += agree
        row["features"] += compared
    return row | {"agreement": round(mean(scores), 6), "agreement_sd": round(stdev(scores), 6),
                  "agreement_min": round(min(scores), 6), "agreement_max": round(max(scores), 6),
                  "delta": ";".join(f"{d:g}" for d in chosen)}


def write_agreement(path: str | Path, rows: Sequence[dict]) -> Path:
    """agreement.csv (or agreement_by_delta.csv), atomically; the columns are the union of the rows' keys."""
    buffer = io.StringIO()
    fields = list(dict.fromkeys(k for row in rows for k in row)) or ["group", "value", "classes", "features",
                                                                     "agree", "agreement"]
    writer = csv.DictWriter(buffer, fieldnames=fields, restval="", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return atomic_write_text(path, buffer.getvalue())


__all__ = ["Annotation", "Annotations", "agreement", "agreement_by_delta", "cross_validated_delta", "write_agreement",
           "decide", "check_delta", "check_folds", "LABELS", "BIAS_LEVELS", "ANALYSIS"]
