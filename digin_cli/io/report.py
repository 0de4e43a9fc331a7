"""``report.html``: one self-contained page per run and per sweep, built only from what is on disk.

A run page shows one card per item (the task's key images, the iterate strip, the item's numbers), a sortable table
of those numbers, and a header with the command line, status, seconds, peak memory and the resolved config. A sweep
page links every job's page and shows ``sweep_status.csv`` and the merged ``summary.csv``. Everything comes from the
files tasks already write — item folders with ``metrics.json``, ``summary.csv``, ``status.json``, ``config.yaml``,
Hydra's ``.hydra/overrides.yaml`` — so the page of an old folder can be rebuilt (``digin report``) and a killed job's
last page still shows every item it finished. A task only names its key images (``KEY_IMAGES`` in its module);
without that list an item shows all its images.

Pages are plain HTML with a few lines of inline JavaScript (sorting, an image-loaded check): no framework, no CDN,
so the folder can be opened offline or copied off a cluster. Jinja2 autoescapes every string taken from configs,
file names or metrics, and image paths are relative and percent-encoded.
"""

from __future__ import annotations

import csv
import json
import os
import re
import shlex
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

from digin_cli.errors import DiginError
from digin_cli.io.atomic import atomic_write_text

REPORT = "report.html"
SAFETY = "safety.json"  # the safety checker's verdicts on an item's images (digin_cli.safety); flagged ones blur
STRIP = "iterates.png"  # the captioned iterate strip every optimisation task writes (tasks.common.save_optimisation)
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".gif")
_SKIP_DIRS = {".hydra", "wandb"}
_ROOT_FILES = ("config.yaml", "status.json", "summary.csv", "error.log", "cli.log")
_STATUS_KEYS = ("status", "task", "output_dir", "error", "seconds", "peak_memory_mb", "items", "items_failed")
_LONG_TEXT = 60  # longer strings (captions, prompts) stay on the item's card, out of the numbers table


@dataclass
class Cell:
    """One table cell: what is shown, the value it sorts by, an optional relative link."""

    text: str
    value: str
    href: str | None = None


@dataclass
class Table:
    columns: list[str]
    rows: list[list[Cell]]


@dataclass
class Item:
    """One finished (or failed) item of a run, as the page shows it."""

    name: str
    anchor: str
    status: str
    images: list[tuple[str, str]] = field(default_factory=list)  # (label, relative URL)
    strip: str | None = None
    others: list[tuple[str, str]] = field(default_factory=list)
    fields: dict[str, Any] = field(default_factory=dict)
    error: str = ""
    image_paths: dict[str, Path] = field(default_factory=dict)  # label -> file, for W&B
    flagged: set[str] = field(default_factory=set)  # URLs the safety checker flagged: shown blurred


# --------------------------------------------------------------------------------------------------- reading


def _natural(text: str) -> list:
    # "seed_10" after "seed_2": numbers compare as numbers.
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", text)]


def _url(relative: Path) -> str:
    return "/".join(quote(part, safe="") for part in relative.parts)


def _read_json(path: Path) -> dict:
    try:
        value = json.loads(path.read_text("utf-8"))
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def _read_csv(path: Path) -> list[dict[str, str]]:
    try:
        with path.open(newline="", encoding="utf-8") as f:
            return list(csv.DictReader(f))
    except (OSError, csv.Error):
        return []


def _read_yaml(path: Path) -> Any:
    import yaml  # PyYAML comes with omegaconf; plain safe loading, no interpolation needed

    try:
        return yaml.safe_load(path.read_text("utf-8"))
    except (OSError, yaml.YAMLError):
        return None


def _scalar(value: Any) -> bool:
    return value is None or isinstance(value, (str, int, float, bool))


def _last_line(path: Path) -> str:
    try:
        lines = [line for line in path.read_text("utf-8", errors="replace").splitlines() if line.strip()]
    except OSError:
        return ""
    return lines[-1].strip() if lines else ""


def _is_image(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".")


def _item_folders(run_dir: Path) -> list[Path]:
    # One walk that never enters .hydra, wandb (thousands of files) or hidden folders.
    found = []
    for root, dirs, files in os.walk(run_dir):
        dirs[:] = [d for d in dirs if d not in _SKIP_DIRS and not d.startswith(".")]
        if root != str(run_dir) and ("metrics.json" in files or "error.log" in files):
            found.append(Path(root))
    return sorted(found, key=lambda p: _natural(p.relative_to(run_dir).as_posix()))


def collect_items(run_dir: Path, key_images: Sequence[str] | None) -> list[Item]:
    """The run's items in natural path order.

    An item is a folder holding ``metrics.json`` (done) or ``error.log`` (failed). Tasks whose items are single
    files (``task=sample``) write no item folders; then every image at the run's top level is an item, with its
    ``summary.csv`` row (matched by file name) as its numbers.
    """
    run_dir = Path(run_dir)
    found = _item_folders(run_dir)
    if found:
        items = [_folder_item(run_dir, folder, n, key_images) for n, folder in enumerate(found)]
    else:
        items = _file_items(run_dir)
    return items + _skipped_items(run_dir, len(items))


def _skipped_items(run_dir: Path, start: int) -> list[Item]:
    """Inputs ``task.skip_unreadable`` left out: summary.csv rows with ``status=skipped`` (no folder of their own)."""
    rows = [r for r in _read_csv(run_dir / "summary.csv") if r.get("status") == "skipped"]
    return [Item(name=r.get("image") or r.get("path") or "?", anchor=f"item-{start + n}", status="skipped",
                 fields={"path": r["path"]} if r.get("path") else {}, error=r.get("error") or "")
            for n, r in enumerate(rows)]


def _folder_item(run_dir: Path, folder: Path, n: int, key_images: Sequence[str] | None) -> Item:
    rel = folder.relative_to(run_dir)
    metrics = _read_json(folder / "metrics.json")
    done = bool(metrics)
    item = Item(name=" / ".join(rel.parts), anchor=f"item-{n}", status="ok" if done else "failed")
    # The task's own summary numbers first (they are what a reader compares), then the item's other scalars.
    summary = metrics.get("summary")
    fields = {k: v for k, v in summary.items() if _scalar(v)} if isinstance(summary, dict) else {}
    fields.update({k: v for k, v in metrics.items() if _scalar(v) and k != "error" and k not in fields})
    item.fields = fields
    item.error = str(metrics.get("error") or "") if done else _last_line(folder / "error.log")
    files = sorted((p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")),
                   key=lambda p: _natural(p.name))
    names = [p.name for p in files]
    if key_images is None:  # a task that names none: every image of the item, the strip in its own row
        keys = [name for name in names if name != STRIP and _is_image(folder / name)]
    else:
        keys = [name for name in key_images if name in names]
    for name in keys:
        label = Path(name).stem.replace("_", " ")
        item.images.append((label, _url(rel / name)))
        item.image_paths[label] = folder / name
    if STRIP in names:
        item.strip = _url(rel / STRIP)
        item.image_paths["iterates"] = folder / STRIP
    item.others = [(name, _url(rel / name)) for name in names if name not in keys and name != STRIP]
    flagged = _read_json(folder / SAFETY).get("flagged") or []
    item.flagged = {_url(rel / str(name)) for name in flagged}
    if item.flagged and item.strip:  # the strip shows the iterates around the flagged image: blurred too
        item.flagged.add(item.strip)
    return item


def _file_items(run_dir: Path) -> list[Item]:
    # A failed single-file item leaves "<name>.error.log" where "<name>.png" would be (tasks.common.run_items).
    files = [p for p in run_dir.iterdir() if _is_image(p) or p.name.endswith(".error.log")]
    rows = _read_csv(run_dir / "summary.csv")
    items = []
    for n, path in enumerate(sorted(files, key=lambda p: _natural(p.name))):
        if path.name.endswith(".error.log"):
            items.append(Item(name=path.name[: -len(".error.log")], anchor=f"item-{n}", status="failed",
                              error=_last_line(path), others=[(path.name, _url(Path(path.name)))]))
            continue
        row = next((r for r in rows if path.name in r.values()), {})
        fields = {k: v for k, v in row.items() if v != path.name and k != "status"}
        flagged = _read_json(path.with_name(f"{path.name}.{SAFETY}")).get("flagged") or []
        items.append(Item(name=path.name, anchor=f"item-{n}", status=row.get("status") or "ok", fields=fields,
                          images=[(path.stem, _url(Path(path.name)))], image_paths={path.stem: path},
                          flagged={_url(Path(path.name))} if path.name in flagged else set()))
    return items


def _command(overrides: Any, multirun: bool = False) -> str | None:
    if not isinstance(overrides, list):
        return None
    return " ".join(["digin", *(["-m"] if multirun else []), *(shlex.quote(str(o)) for o in overrides)])


_FLOAT_TEXT = re.compile(r"-?\d+(\.\d*)?([eE][-+]?\d+)?")


def _format(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, str) and _FLOAT_TEXT.fullmatch(value) and not value.lstrip("-").isdigit():
        value = float(value)  # a float read back from a CSV: shown like the ones from JSON
    if isinstance(value, float):
        return f"{value:.4g}"
    return "" if value is None else str(value)


def _sort_value(value: Any) -> str:
    if isinstance(value, bool):
        return str(int(value))
    if isinstance(value, (int, float)):
        return repr(value)
    text = "" if value is None else str(value)
    if text in ("True", "False"):  # booleans read back from a CSV
        return str(int(text == "True"))
    return text


def _cell(value: Any, href: str | None = None) -> Cell:
    return Cell(_format(value), _sort_value(value), href)


def _table(rows: list[dict], link: Callable[[str, Any], str | None] = lambda key, value: None) -> Table:
    columns: dict[str, None] = {}
    for row in rows:
        columns.update(dict.fromkeys(row))
    keys = list(columns)
    return Table(keys, [[_cell(row.get(k), link(k, row.get(k))) for k in keys] for row in rows])


# --------------------------------------------------------------------------------------------------- pages


def _environment():
    import jinja2

    env = jinja2.Environment(loader=jinja2.FileSystemLoader(Path(__file__).with_name("templates")),
                             autoescape=True, trim_blocks=True, lstrip_blocks=True,
                             undefined=jinja2.StrictUndefined, keep_trailing_newline=True)
    env.filters["number"] = _format
    return env


def is_run_folder(folder: Path) -> bool:
    return any((folder / name).is_file() for name in ("config.yaml", "status.json"))


def is_sweep_folder(folder: Path) -> bool:
    # Hydra writes multirun.yaml when the sweep starts; sweep_status.csv comes at its end.
    return (folder / "multirun.yaml").is_file() or (folder / "sweep_status.csv").is_file()


def _jobs(sweep_dir: Path) -> list[Path]:
    return sorted((p for p in sweep_dir.iterdir() if p.is_dir() and is_run_folder(p)),
                  key=lambda p: _natural(p.name))


def task_of(run_dir: Path) -> str | None:
    """The task a run folder belongs to (status.json, else the resolved config.yaml)."""
    task = _read_json(run_dir / "status.json").get("task")
    if task:
        return str(task)
    config = _read_yaml(run_dir / "config.yaml")
    try:
        return str(config["task"]["name"])
    except (TypeError, KeyError):
        return None


def render_run(run_dir: str | Path, key_images: Sequence[str] | None = None) -> str:
    """The HTML of ``run_dir``'s page (see the module docstring)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir() or not is_run_folder(run_dir):
        raise DiginError(f"'{run_dir}' is not a digin run folder (no config.yaml or status.json) — pass a folder "
                         "written by digin, e.g. outputs/<task>/runs/<run>")
    status = _read_json(run_dir / "status.json")
    items = collect_items(run_dir, key_images)
    table_rows = []
    for item in items:
        row = {"item": item.name, "status": item.status}
        row.update({k: v for k, v in item.fields.items()
                    if not (isinstance(v, str) and len(v) > _LONG_TEXT) and k not in row})
        table_rows.append(row)
    anchors = {item.name: item.anchor for item in items}
    numbers = _table(table_rows, lambda key, value: f"#{anchors[value]}" if key == "item" else None)
    config_text = ""
    if (run_dir / "config.yaml").is_file():
        config_text = (run_dir / "config.yaml").read_text("utf-8", errors="replace")
    sweep_page = run_dir.parent / REPORT if is_sweep_folder(run_dir.parent) else None
    return _environment().get_template("run.html.j2").render(
        title=f"digin · {task_of(run_dir) or 'run'} · {run_dir.resolve().name}",
        folder=str(run_dir.resolve()),
        task=task_of(run_dir) or "",
        command=_command(_read_yaml(run_dir / ".hydra" / "overrides.yaml")),
        status=status.get("status") or "running",
        status_known=bool(status),
        error=status.get("error") or "",
        seconds=_format(status.get("seconds")),
        peak_memory=_format(status.get("peak_memory_mb")),
        job_summary=[(k, _format(v)) for k, v in status.items() if k not in _STATUS_KEYS and _scalar(v)],
        files=[(name, _url(Path(name))) for name in _ROOT_FILES if (run_dir / name).is_file()],
        config=config_text,
        items=items,
        items_failed=sum(item.status == "failed" for item in items),
        numbers=numbers,
        sweep_link=f"../{REPORT}" if sweep_page is not None else None,
        evaluation=_evaluation(run_dir),
    )


def _evaluation(folder: Path) -> Table | None:
    """``digin evaluate``'s evaluation.csv (one row per group of items), when the folder has one."""
    rows = _read_csv(folder / "evaluation.csv")
    return _table(rows) if rows else None


def write_report(run_dir: str | Path, key_images: Sequence[str] | None = None) -> Path:
    """Write ``run_dir/report.html`` atomically; returns its path."""
    run_dir = Path(run_dir)
    return atomic_write_text(run_dir / REPORT, render_run(run_dir, key_images))


def render_sweep(sweep_dir: str | Path) -> str:
    sweep_dir = Path(sweep_dir)
    if not sweep_dir.is_dir() or not is_sweep_folder(sweep_dir):
        raise DiginError(f"'{sweep_dir}' is not a digin sweep folder (no multirun.yaml, sweep_status.csv or job "
                         "folders) — pass a folder written by digin -m, e.g. outputs/<task>/multiruns/<sweep>")
    jobs = {job.name: job for job in _jobs(sweep_dir)}
    status_rows = _read_csv(sweep_dir / "sweep_status.csv")
    if not status_rows:  # the sweep is still running (or was killed): the same columns from each job's status.json
        status_rows = []
        for name, job in jobs.items():
            status = _read_json(job / "status.json")
            status_rows.append({"job": name, "status": status.get("status") or "running",
                                "seconds": status.get("seconds"), "error": status.get("error", "")})
    overrides = {}
    for name, job in jobs.items():
        listed = _read_yaml(job / ".hydra" / "overrides.yaml")
        overrides[name] = [str(o) for o in listed] if isinstance(listed, list) else []
    shared = set.intersection(*map(set, overrides.values())) if len(overrides) > 1 else set()
    for row in status_rows:  # what sets each job apart: the overrides not shared by every job
        row["overrides"] = " ".join(o for o in overrides.get(str(row.get("job")), []) if o not in shared)

    def job_link(key: str, value: Any) -> str | None:
        job = jobs.get(str(value))
        if key == "job" and job is not None and (job / REPORT).is_file():
            return _url(Path(job.name) / REPORT)
        return None

    merged = _read_csv(sweep_dir / "summary.csv")  # a sweep-level merge (sharded sweeps write one)
    if not merged:
        merged = [{"job": name, **row} for name, job in jobs.items() for row in _read_csv(job / "summary.csv")]
    multirun = _read_yaml(sweep_dir / "multirun.yaml")
    try:
        overrides = multirun["hydra"]["overrides"]["task"]
    except (TypeError, KeyError):
        overrides = None
    return _environment().get_template("sweep.html.j2").render(
        title=f"digin · sweep · {sweep_dir.resolve().name}",
        folder=str(sweep_dir.resolve()),
        command=_command(overrides, multirun=True),
        jobs=_table(status_rows, job_link),
        summary=_table(merged, job_link) if merged else None,
        files=[(name, _url(Path(name))) for name in ("sweep_status.csv", "summary.csv", "multirun.yaml")
               if (sweep_dir / name).is_file()],
        evaluation=_evaluation(sweep_dir),
    )


def write_sweep_report(sweep_dir: str | Path) -> Path:
    sweep_dir = Path(sweep_dir)
    return atomic_write_text(sweep_dir / REPORT, render_sweep(sweep_dir))


def refresh(write: Callable[..., Any], *args: Any, what: str = REPORT) -> Any:
    """Call ``write(*args)`` for a running job: a page that cannot be written must never fail the job."""
    try:
        return write(*args)
    except Exception as err:  # noqa: BLE001 — the page is a view of the results, never a reason to lose them
        print(f"digin: warning: could not write {what} ({type(err).__name__}: {err})", file=sys.stderr)
        return None


def rebuild(folder: str | Path, key_images_of: Callable[[str | None], Sequence[str] | None]) -> list[Path]:
    """``digin report``: rebuild the page of a run folder, or of a sweep folder and every job in it."""
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise DiginError(f"no folder '{folder}' — pass a run folder (outputs/<task>/runs/<run>) or a sweep folder "
                         "(outputs/<task>/multiruns/<sweep>)")
    if is_run_folder(folder):
        pages = [write_report(folder, key_images_of(task_of(folder)))]
        if is_sweep_folder(folder.parent):
            pages.append(write_sweep_report(folder.parent))  # its job links may now point at a page
        return pages
    if is_sweep_folder(folder):
        pages = [write_report(job, key_images_of(task_of(job))) for job in _jobs(folder)]
        return [*pages, write_sweep_report(folder)]
    raise DiginError(f"'{folder}' is neither a digin run folder (config.yaml, status.json) nor a sweep folder "
                     "(multirun.yaml, sweep_status.csv) — pass the folder digin printed or wrote")


def key_image_table(run_dir: str | Path, key_images: Sequence[str] | None) -> tuple[list[str], list[list]]:
    """Columns and rows (one per item) of the key images and numbers, image cells as paths: the W&B table."""
    items = collect_items(Path(run_dir), key_images)
    labels: dict[str, None] = {}
    numbers: dict[str, None] = {}
    for item in items:
        labels.update(dict.fromkeys(item.image_paths))
        numbers.update(dict.fromkeys(k for k, v in item.fields.items() if isinstance(v, (int, float))))
    columns = ["item", "status", *labels, *numbers]
    rows = [[item.name, item.status, *(item.image_paths.get(label) for label in labels),
             *(item.fields.get(k) for k in numbers)] for item in items]
    return columns, rows

