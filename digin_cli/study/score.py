"""``digin study score``: what the papers report, from the answers files a study's page downloaded.

- per question and run: the mean rating (for yes/no the share of "yes", as DiG-IN Table 1 gives Q1-Q3) with a 95 %
  percentile bootstrap interval (scipy.stats.bootstrap, 10 000 resamples of the individual ratings, seeded);
- preference: the shares of A, B and "equal" (Table 1's "Better?"), each with its interval, and a two-sided binomial
  (sign) test of A against B among the non-equal answers;
- with two runs, a paired test per rated question over the (participant, item) pairs: Student's paired t-test
  (DiffExplainer's test) and the Wilcoxon signed-rank test (for ordinal ratings), both scipy;
- agreement between raters: Krippendorff's alpha (the ``krippendorff`` package) over units = (item, run) images for
  rated questions and items for preferences, nominal for yes/no and preference, ordinal for Likert / resemblance;
  it allows any number of raters and missing ratings, where Fleiss' kappa needs every rater on every unit.

Writes ``results.csv`` (one row per question, run and statistic) and ``results.html`` into the study folder.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np

from digin_cli.errors import DiginError
from digin_cli.io.atomic import atomic_write_text
from digin_cli.study.make import ANSWERS_FORMAT, FORMAT, environment, items_checksum
from digin_cli.study.questions import RATED

COLUMNS = ["question", "type", "run", "statistic", "value", "ci_low", "ci_high", "n"]
RESAMPLES = 10_000


def load_study(folder: Path) -> dict:
    path = Path(folder).expanduser() / "study.json"
    try:
        study = json.loads(path.read_text("utf-8"))
    except (OSError, ValueError):
        study = None
    if not isinstance(study, dict) or study.get("format") != FORMAT:
        raise DiginError(f"'{folder}' is not a digin study folder (no readable study.json) — pass the --out folder of "
                         "digin study make")
    if items_checksum(study["items"]) != study.get("items_checksum"):
        raise DiginError(f"{path} was edited: its items no longer match their checksum — score with the study "
                         "folder exactly as digin study make wrote it")
    return study


def load_answers(study: dict, files: list[Path]) -> list[dict]:
    """Every answers file, checked to belong to this study (one line naming the file otherwise)."""
    if not files:
        raise DiginError("no answers file given — usage: digin study score <study folder> <answers.json> ...")
    keys = {item["key"] for item in study["items"]}
    seen: dict[str, Path] = {}
    sheets = []
    for path in map(Path, files):
        try:
            sheet = json.loads(path.read_text("utf-8"))
        except (OSError, ValueError) as err:
            raise DiginError(f"cannot read answers file {path} ({type(err).__name__}) — pass the JSON file the study "
                             "page downloaded") from None
        if not isinstance(sheet, dict) or sheet.get("format") != ANSWERS_FORMAT:
            raise DiginError(f"{path} is not a digin study answers file — pass the JSON file the study page downloaded")
        if sheet.get("study_id") != study["study_id"] or sheet.get("items_checksum") != study["items_checksum"]:
            raise DiginError(f"{path} answers study {sheet.get('study_id')!r}, not this study "
                             f"{study['study_id']!r} (or its items differ) — score it with its own study folder")
        participant = str(sheet.get("participant"))
        if participant in seen:
            raise DiginError(f"participant {participant!r} answered twice ({seen[participant]} and {path}) — pass "
                             "one answers file per participant")
        seen[participant] = path
        answered = {r.get("item") for r in sheet.get("responses", [])}
        if answered != keys:
            raise DiginError(f"{path} does not answer exactly this study's {len(keys)} items — pass the file "
                             "downloaded at the end of the study")
        sheets.append(sheet)
    return sheets


def _bootstrap(values: np.ndarray, seed: int) -> tuple[float, float]:
    from scipy.stats import bootstrap

    if len(values) < 2 or np.all(values == values[0]):
        return (float(values[0]),) * 2 if len(values) else (float("nan"),) * 2
    result = bootstrap((values,), np.mean, confidence_level=0.95, n_resamples=RESAMPLES, method="percentile",
                       random_state=np.random.default_rng(seed))
    return float(result.confidence_interval.low), float(result.confidence_interval.high)


def _alpha(matrix: np.ndarray, level: str) -> float | None:
    import krippendorff

    rated = ~np.isnan(matrix)
    if matrix.shape[0] < 2 or len(np.unique(matrix[rated])) < 2:
        return None  # one rater, or one value throughout: alpha is undefined
    return float(krippendorff.alpha(reliability_data=matrix, level_of_measurement=level))


def score(study: dict, sheets: list[dict], seed: int = 0) -> list[dict]:
    """The rows of results.csv."""
    from scipy.stats import binomtest, ttest_rel, wilcoxon

    runs = list(study["runs"])
    items = [item["key"] for item in study["items"]]
    rows = []

    def add(question, run, statistic, value, ci=(None, None), n=None):
        rows.append({"question": question["id"], "type": question["type"], "run": run, "statistic": statistic,
                     "value": value, "ci_low": ci[0], "ci_high": ci[1], "n": n})

    for q in study["questions"]:
        answers = [{r["item"]: r["answers"].get(q["id"]) for r in sheet["responses"]} for sheet in sheets]
        if q["type"] in RATED:
            ratings = {run: np.array([[float(a[k][run]) if isinstance(a.get(k), dict) and run in a[k] else np.nan
                                       for k in items] for a in answers]) for run in runs}  # raters x items
            for run in runs:
                values = ratings[run][~np.isnan(ratings[run])]
                add(q, run, "mean", float(values.mean()) if len(values) else None, _bootstrap(values, seed),
                    len(values))
            if len(runs) == 2:
                a, b = ratings["A"].ravel(), ratings["B"].ravel()
                both = ~np.isnan(a) & ~np.isnan(b)
                a, b = a[both], b[both]
                if len(a) >= 2 and np.any(a != b):
                    t = ttest_rel(a, b)
                    add(q, "A-B", "mean_difference", float((a - b).mean()), _bootstrap(a - b, seed), len(a))
                    add(q, "A-B", "t", float(t.statistic), n=len(a))
                    add(q, "A-B", "p_t", float(t.pvalue), n=len(a))
                    w = wilcoxon(a, b)
                    add(q, "A-B", "wilcoxon_W", float(w.statistic), n=len(a))
                    add(q, "A-B", "p_wilcoxon", float(w.pvalue), n=len(a))
            level = "nominal" if q["type"] == "yes_no" else "ordinal"
            add(q, "all", f"krippendorff_alpha_{level}", _alpha(np.hstack([ratings[r] for r in runs]), level),
                n=len(sheets))
        else:  # preference: A, B or equal per item
            choice = np.array([[a.get(k) for k in items] for a in answers], dtype=object)
            flat = [c for c in choice.ravel() if c is not None]
            for option in [*runs, "equal"]:
                hits = np.array([c == option for c in flat], dtype=float)
                add(q, option, "share", float(hits.mean()), _bootstrap(hits, seed), len(flat))
            wins_a, wins_b = flat.count("A"), flat.count("B")
            if wins_a + wins_b:
                add(q, "A-B", "p_binomial", float(binomtest(wins_a, wins_a + wins_b, 0.5).pvalue), n=wins_a + wins_b)
            codes = {"A": 0.0, "B": 1.0, "equal": 2.0}
            matrix = np.array([[codes.get(c, np.nan) for c in row] for row in choice], dtype=float)
            add(q, "all", "krippendorff_alpha_nominal", _alpha(matrix, "nominal"), n=len(sheets))
    return rows


def write_results(study: dict, rows: list[dict], out: Path, answers: list[Path]) -> list[Path]:
    out = Path(out)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows({k: ("" if v is None else v) for k, v in row.items()} for row in rows)
    csv_path = atomic_write_text(out / "results.csv", buffer.getvalue())
    questions = {q["id"]: q for q in study["questions"]}
    table1 = []  # Table 1's layout: one row per run, one column per question (+ preference share)
    for run in study["runs"]:
        cells = {}
        for row in rows:
            if row["run"] == run and row["statistic"] in ("mean", "share") and row["value"] is not None:
                percent = questions[row["question"]]["type"] in ("yes_no", "preference")
                cells[row["question"]] = f"{100 * row['value']:.1f} %" if percent else f"{row['value']:.2f}"
        table1.append((run, cells))
    equal = next((r for r in rows if r["run"] == "equal"), None)
    if equal is not None:
        table1.append(("equal", {equal["question"]: f"{100 * equal['value']:.1f} %"}))
    page = environment().get_template("results.html.j2").render(
        title=f"Results · {study['title']}", study=study, questions=study["questions"], table1=table1,
        rows=rows, columns=COLUMNS, answers=[p.name for p in answers], fmt=_fmt)
    return [csv_path, atomic_write_text(out / "results.html", page)]


def _fmt(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def score_study(folder: Path, answers: list[Path], out: Path | None = None, seed: int = 0) -> list[Path]:
    study = load_study(folder)
    sheets = load_answers(study, answers)
    return write_results(study, score(study, sheets, seed), Path(out or folder).expanduser(), list(map(Path, answers)))
