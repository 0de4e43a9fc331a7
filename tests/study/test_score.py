"""digin study score: the papers' statistics from answers files, checked against hand computations; answers of
another study are refused in one line."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest

from digin_cli.errors import DiginError
from digin_cli.study.make import make_study
from digin_cli.study.score import _alpha, load_answers, load_study, score, score_study
from tests.cli_helpers import one_line_error, run_digin
from tests.study.helpers import vce_run



@pytest.fixture(scope="module")
def study(tmp_path_factory):
    root = tmp_path_factory.mktemp("score")
    a, b = vce_run(root, "run_a"), vce_run(root, "run_b", name="best.png")
    never = lambda images: [False] * len(images)  # noqa: E731  (the checker itself is tested in test_safety)
    return make_study([a, b], "uvce", root / "study", never, "none", seed=0)


def sheet(data: dict, participant: str, answer) -> dict:
    """An answers file as the page writes it; ``answer(position, question, run)`` gives each rating."""
    responses = []
    for position, item in enumerate(data["items"]):
        answers = {q["id"]: answer(position, q["id"], None) if q["type"] == "preference"
                   else {run: answer(position, q["id"], run) for run in ("A", "B")} for q in data["questions"]}
        responses.append({"item": item["key"], "position": position, "sides": ["A", "B"], "answers": answers,
                          "seconds": 1.0})
    return {"format": "digin-study-answers/1", "study_id": data["study_id"], "items_checksum": data["items_checksum"],
            "participant": participant, "responses": responses}


def test_scores_equal_hand_computations(study):
    data = load_study(study)
    q1 = {"p1": ([1, 1, 1, 0, 1, 1], [0, 1, 0, 0, 0, 1]), "p2": ([1, 0, 1, 1, 1, 1], [0, 0, 0, 1, 0, 0])}
    better = {"p1": ["A", "A", "B", "equal", "A", "A"], "p2": ["A", "equal", "B", "A", "A", "A"]}

    def answers_of(p):
        return lambda pos, q, run: (better[p][pos] if q == "better" else
                                    q1[p][0 if run == "A" else 1][pos] if q == "q1" else 1)

    rows = score(data, [sheet(data, p, answers_of(p)) for p in ("p1", "p2")], seed=0)
    got = {(r["question"], r["run"], r["statistic"]): r for r in rows}
    a = np.array(q1["p1"][0] + q1["p2"][0], float)
    b = np.array(q1["p1"][1] + q1["p2"][1], float)
    assert got[("q1", "A", "mean")]["value"] == pytest.approx(a.mean()) and got[("q1", "A", "mean")]["n"] == 12
    assert got[("q1", "B", "mean")]["value"] == pytest.approx(b.mean())
    low, high = got[("q1", "B", "mean")]["ci_low"], got[("q1", "B", "mean")]["ci_high"]
    assert low < b.mean() < high and 0.05 < high - low < 0.6  # a 95 % interval of a share of 12 answers
    d = a - b  # paired t by hand: mean difference over its standard error
    assert got[("q1", "A-B", "t")]["value"] == pytest.approx(d.mean() / (d.std(ddof=1) / np.sqrt(len(d))))
    assert 0 < got[("q1", "A-B", "p_wilcoxon")]["value"] < 0.05
    shares = {run: got[("better", run, "share")]["value"] for run in ("A", "B", "equal")}
    assert shares == pytest.approx({"A": 8 / 12, "B": 2 / 12, "equal": 2 / 12})  # Table 1's "Better?" column
    assert got[("better", "A-B", "p_binomial")]["value"] == pytest.approx(
        sum(math.comb(10, k) for k in (0, 1, 2, 8, 9, 10)) / 2**10)  # two-sided sign test, 8 of 10
    assert got[("q2", "all", "krippendorff_alpha_nominal")]["value"] is None  # one value throughout: undefined
    assert ("q2", "A-B", "t") not in got  # no difference at all: no test to run


def test_krippendorff_alpha_reproduces_krippendorff_2011():
    """Krippendorff (2011), "Computing Krippendorff's Alpha-Reliability", Sec. C: 4 observers, 12 units, missing
    values; alpha = 0.743 (nominal), 0.815 (ordinal)."""
    n = np.nan
    data = np.array([[1, 2, 3, 3, 2, 1, 4, 1, 2, n, n, n], [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, n, 3],
                     [n, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, n], [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, n]])
    assert _alpha(data, "nominal") == pytest.approx(0.743, abs=5e-4)
    assert _alpha(data, "ordinal") == pytest.approx(0.815, abs=5e-4)
    assert _alpha(data[:1], "nominal") is None  # one rater


def test_answers_of_another_study_are_refused_in_one_line(study, tmp_path):
    data = json.loads((study / "study.json").read_text())
    good = tmp_path / "good.json"
    good.write_text(json.dumps(sheet(data, "p1", lambda pos, q, run: "A" if q == "better" else 1)))
    other = tmp_path / "other.json"
    other.write_text(json.dumps({**json.loads(good.read_text()), "study_id": "0123456789ab", "participant": "p2"}))
    cli = ["study", "score", str(study)]
    proc = run_digin(*cli, good, other, timeout=300)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    assert "other.json answers study '0123456789ab', not this study" in proc.stderr
    one_line_error(proc, "other.json answers study '0123456789ab', not this study")
    assert not (study / "results.csv").exists()  # nothing written on a refusal
    with pytest.raises(DiginError, match="answered twice"):
        load_answers(data, [good, good])
    proc = run_digin(*cli, good, timeout=300)
    assert proc.returncode == 0, proc.stderr
    rows = list(csv.DictReader((study / "results.csv").open()))
    assert {r["statistic"] for r in rows} >= {"mean", "share", "krippendorff_alpha_nominal"}
    assert "<table id=\"table1\">" in (study / "results.html").read_text()


def test_an_edited_study_is_refused(study, tmp_path):
    import shutil

    copy = shutil.copytree(study, tmp_path / "copy")
    data = json.loads((copy / "study.json").read_text())
    data["items"] = data["items"][1:]
    (copy / "study.json").write_text(json.dumps(data))
    with pytest.raises(DiginError, match="was edited"):
        score_study(copy, [tmp_path / "x.json"])
    with pytest.raises(DiginError, match="not a digin study folder"):
        score_study(tmp_path, [tmp_path / "x.json"])
