"""Questionnaires of a study: a YAML file (``title``, ``instructions``, ``questions``), checked once at ``make``.

Four question types cover both papers' studies:

- ``yes_no`` and ``likert`` (``scale`` points, optional end ``labels``): a statement rated for every explanation
  image (DiG-IN Table 1, Q1-Q3, asked about each counterfactual);
- ``preference``: which of the two runs' images is better, or equal (DiG-IN Table 1, "Better?"); two runs only;
- ``resemblance``: a 1-``scale`` rating of each image against a highlighted real image (DiffExplainer Sec. 4.3);
  ``reference`` names the item file shown highlighted (default ``mask_overlay.png``, the original where missing).

Shipped questionnaires (``--config <name>``): ``uvce`` (DiG-IN Table 1) and ``resemblance`` (DiffExplainer).
"""

from __future__ import annotations

import re
from pathlib import Path

from digin_cli.errors import DiginError, suggest

PACKAGED = Path(__file__).with_name("questionnaires")
TYPES = ("yes_no", "likert", "preference", "resemblance")
RATED = ("yes_no", "likert", "resemblance")  # asked once per explanation image; preference once per item
_ID = re.compile(r"[a-z][a-z0-9_]{0,39}")


def packaged() -> list[str]:
    return sorted(p.stem for p in PACKAGED.glob("*.yaml"))


def load_questionnaire(source: str | Path, runs: int) -> dict:
    """The questionnaire at ``source`` (a file, or the name of a shipped one), checked and with defaults filled."""
    import yaml

    path = Path(source).expanduser()
    if not path.is_file():
        if str(source) not in packaged():
            raise DiginError(f"no questionnaire '{source}'{suggest(str(source), packaged())} — pass a YAML file or "
                             f"one of: {', '.join(packaged())}")
        path = PACKAGED / f"{source}.yaml"
    try:
        spec = yaml.safe_load(path.read_text("utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as err:
        raise DiginError(f"cannot read questionnaire {path} ({type(err).__name__}) — pass a YAML file with title, "
                         "instructions and questions") from None
    where = f"questionnaire {path.name}"
    if not isinstance(spec, dict) or not isinstance(spec.get("questions"), list) or not spec["questions"]:
        raise DiginError(f"{where} has no list of questions — write questions: [{{id: q1, type: yes_no, text: ...}}]")
    questions, seen = [], set()
    for n, raw in enumerate(spec["questions"]):
        question = _question(raw, f"{where}, question {n + 1}")
        if question["id"] in seen:
            raise DiginError(f"{where}: question id '{question['id']}' is used twice — give each question its own id")
        seen.add(question["id"])
        questions.append(question)
    if runs < 2 and any(q["type"] == "preference" for q in questions):
        import sys

        print("digin: note: a study of one run has no A/B preference question; it is left out", file=sys.stderr)
        questions = [q for q in questions if q["type"] != "preference"]
    if not questions:
        raise DiginError(f"{where} asks nothing a one-run study can ask — add a yes_no, likert or resemblance question")
    return {"title": str(spec.get("title") or "User study"), "instructions": str(spec.get("instructions") or ""),
            "questions": questions}


def _question(raw, where: str) -> dict:
    if not isinstance(raw, dict):
        raise DiginError(f"{where} is not a mapping — write {{id: q1, type: yes_no, text: ...}}")
    qid, kind, text = str(raw.get("id", "")), str(raw.get("type", "")), raw.get("text")
    if not _ID.fullmatch(qid):
        raise DiginError(f"{where}: id '{qid}' is not a short lower-case name — use e.g. id: q1 (letters, digits, _)")
    if kind not in TYPES:
        raise DiginError(f"{where}: unknown type '{kind}'{suggest(kind, TYPES)} — use one of: {', '.join(TYPES)}")
    if not isinstance(text, str) or not text.strip():
        raise DiginError(f"{where}: no text — write the statement or question as text: ...")
    question = {"id": qid, "type": kind, "text": text.strip()}
    if kind in ("likert", "resemblance"):
        scale = raw.get("scale", 5)
        if not isinstance(scale, int) or isinstance(scale, bool) or not 2 <= scale <= 10:
            raise DiginError(f"{where}: scale must be an integer from 2 to 10, got {scale!r} — e.g. scale: 5")
        labels = raw.get("labels", ["no resemblance", "strong resemblance"] if kind == "resemblance"
                         else ["strongly disagree", "strongly agree"])
        if not (isinstance(labels, list) and len(labels) == 2 and all(isinstance(s, str) for s in labels)):
            raise DiginError(f"{where}: labels must be two texts, for 1 and for {scale} — e.g. labels: [low, high]")
        question.update(scale=scale, labels=labels)
    if kind == "resemblance":
        question["reference"] = str(raw.get("reference", "mask_overlay.png"))
    return question
