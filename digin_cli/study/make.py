"""``digin study make``: a self-contained, blinded study folder from one or two runs.

The folder holds ``index.html`` (inline CSS and JavaScript, the study data embedded as JSON; no CDN, so it opens
from disk or any static host), ``images/`` (content-addressed copies: a file name says nothing about its run),
``study.json`` (what ``digin study score`` needs: ids, questions, items, which folder is A and which B) and
``safety.json`` (the safety checker's verdict on every image). The page itself shuffles: a participant's item order
and, per item, which run is shown left come from a seed of (study id, participant id), and are written into the
answers. Participants only ever see the runs as "Image 1" and "Image 2".

Every image a participant could see goes through Stable Diffusion's safety checker first (:mod:`digin_cli.safety`);
an item with any flagged image is left out, always, as is one a run-time check (``safety=true``) flagged.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import tempfile
import uuid
from datetime import datetime, timezone
from pathlib import Path

from digin_cli.errors import DiginError
from digin_cli.io.atomic import atomic_write_json, atomic_write_text
from digin_cli.safety import Checker, check_files, sha256
from digin_cli.study.items import ORIGINAL, explanation_image, match, source_items
from digin_cli.study.questions import load_questionnaire

FORMAT = "digin-study/1"
ANSWERS_FORMAT = "digin-study-answers/1"
LABELS = "AB"


def items_checksum(items: list[dict]) -> str:
    """sha256 of the item list (keys, classes, content-addressed image paths): answers carry it, score checks it."""
    text = json.dumps(items, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(text.encode()).hexdigest()


def environment():
    import jinja2

    return jinja2.Environment(loader=jinja2.FileSystemLoader(Path(__file__).with_name("templates")),
                              autoescape=True, trim_blocks=True, lstrip_blocks=True,
                              undefined=jinja2.StrictUndefined, keep_trailing_newline=True)


def make_study(folders: list[Path], questionnaire: str | Path, out: Path, checker: Checker, checker_name: str,
               seed: int | None = None) -> Path:
    """Build the study folder ``out`` from run / sweep ``folders`` (one or two); returns ``out``."""
    if not 1 <= len(folders) <= 2:
        raise DiginError(f"a study compares one or two runs, got {len(folders)} folders — pass <folder A> [<folder B>]")
    out = Path(out).expanduser()
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise DiginError(f"study folder '{out}' already exists and is not empty — pass a new --out (a study's answers "
                         "belong to the exact items it showed)")
    spec = load_questionnaire(questionnaire, len(folders))
    runs = [source_items(Path(f)) for f in folders]
    keys, unmatched = match(runs)
    references = {q["reference"] for q in spec["questions"] if q["type"] == "resemblance"}

    # Every file a participant could see, per item: original, each run's explanation, the highlighted references.
    shown: dict[str, dict[str, Path]] = {}
    for key in keys:
        first = runs[0][key].folder
        files = {LABELS[n]: explanation_image(run[key].folder) for n, run in enumerate(runs)}
        if (first / ORIGINAL).is_file():
            files["original"] = first / ORIGINAL
        for name in sorted(references):
            reference = first / name if (first / name).is_file() else first / ORIGINAL
            if reference.is_file():
                files[f"reference:{name}"] = reference
        shown[key] = files
    verdicts = check_files(checker, sorted({p for files in shown.values() for p in files.values()}))
    unsafe = {}
    for key, files in shown.items():
        flagged = [role for role, path in files.items() if verdicts[path]]
        flagged += [LABELS[n] for n, run in enumerate(runs)
                    if any(name in run[key].flagged for name in (files[LABELS[n]].name, ORIGINAL))]
        if flagged:
            unsafe[key] = sorted(set(flagged))
    keys = [k for k in keys if k not in unsafe]
    if unsafe:
        print(f"digin: {len(unsafe)} item(s) left out: the safety checker flagged an image of each (see safety.json)",
              file=sys.stderr)
    if not keys:
        raise DiginError("no item is left once flagged images are left out — nothing can be shown to participants")

    parent = out.parent
    parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=parent))
    try:
        (staging / "images").mkdir()
        items = []
        for key in keys:
            images = {}
            for role, path in shown[key].items():
                name = f"images/{sha256(path)[:20]}{path.suffix.lower()}"
                if not (staging / name).exists():
                    shutil.copyfile(path, staging / name)
                images[role] = name
            source = runs[0][key]
            items.append({"key": key, "start": source.start, "target": source.target, "images": images})
        study_id = uuid.uuid4().hex[:12]
        study = {"format": FORMAT, "study_id": study_id, "created": datetime.now(timezone.utc).isoformat(),
                 "runs": {LABELS[n]: str(Path(f).expanduser().resolve()) for n, f in enumerate(folders)},
                 "seed": int(seed if seed is not None else uuid.uuid4().int % 2**31), **spec, "items": items,
                 "items_checksum": items_checksum(items),
                 "left_out": {"unsafe": unsafe, "unmatched": unmatched}}
        page = {k: study[k] for k in ("study_id", "seed", "title", "instructions", "questions", "items",
                                      "items_checksum")}
        page["runs"] = list(study["runs"])  # labels only: the page never says which folder is which
        page["format"] = ANSWERS_FORMAT
        atomic_write_json(staging / "study.json", study)
        atomic_write_json(staging / "safety.json", {
            "checker": checker_name, "images": {str(p): {"flagged": f, "sha256": sha256(p)} for p, f in verdicts.items()},
            "left_out": unsafe})
        atomic_write_text(staging / "index.html", environment().get_template("study.html.j2").render(
            title=study["title"], instructions=study["instructions"], data=page))
        if out.exists():
            out.rmdir()  # empty (checked above)
        os.replace(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return out
