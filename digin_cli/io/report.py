"""``report.html``: one self-contained page per run and per sweep, built only from what is on disk.

A run page shows one card per item (the task's key images, the iterate strip, the item's numbers), a sortable table
of those numbers, and a header with the command line, status, seconds, peak memory and the resolved config. A sweep
page links every job's page and shows ``sweep_status.csv`` and the merged ``summary.csv``. Everything comes from the
files tasks already write — item folders with ``metrics.json``, ``summary.csv``, ``status.json``, ``config.yaml``,
Hydra's ``.hydra/overrides.yaml`` — so the page of an old folder can be rebuilt (``digin report``) and a killed job's
last page still shows every item it finished. A task only names its key images (``meta.key_images`` in its conf/task YAML);
without that list an item shows all its images.

Pages are plain HTML with a few lines of inline JavaScript (sorting, an image-loaded check): no framework, no CDN,
so the folder can be opened offline or copied off a cluster. Jinja2 autoescapes every string taken from configs,
file names or metrics, and image paths are relative and percent-encoded.
"""

from __future__ import annotations

import re
import shlex
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from digin_cli.errors import DiginError
from digin_cli.io.atomic import atomic_write_text
from digin_cli.io.run_folder import (  # noqa: F401 — also this module's public names since before the split
    IMAGE_SUFFIXES,
    SAFETY,
    STRIP,
    Item,
    collect_items,
    is_run_folder,
    is_sweep_folder,
    job_folders as _jobs,
    key_image_table,
    read_csv,
    read_json,
    read_yaml,
    scalar,
    task_of,
    url,
)

REPORT = "report.html"
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


def render_run(run_dir: str | Path, key_images: Sequence[str] | None = None) -> str:
    """The HTML of ``run_dir``'s page (see the module docstring)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir() or not is_run_folder(run_dir):
        raise DiginError(f"'{run_dir}' is not a digin run folder (no config.yaml or status.json) — pass a folder "
                         "written by digin, e.g. outputs/<task>/runs/<run>")
    status = read_json(run_dir / "status.json")
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
        command=_command(read_yaml(run_dir / ".hydra" / "overrides.yaml")),
        status=status.get("status") or "running",
        status_known=bool(status),
        error=status.get("error") or "",
        seconds=_format(status.get("seconds")),
        peak_memory=_format(status.get("peak_memory_mb")),
        job_summary=[(k, _format(v)) for k, v in status.items() if k not in _STATUS_KEYS and scalar(v)],
        files=[(name, url(Path(name))) for name in _ROOT_FILES if (run_dir / name).is_file()],
        config=config_text,
        items=items,
        items_failed=sum(item.status == "failed" for item in items),
        numbers=numbers,
        sweep_link=f"../{REPORT}" if sweep_page is not None else None,
        evaluation=_evaluation(run_dir),
    )


def _evaluation(folder: Path) -> Table | None:
    """``digin evaluate``'s evaluation.csv (one row per group of items), when the folder has one."""
    rows = read_csv(folder / "evaluation.csv")
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
    status_rows = read_csv(sweep_dir / "sweep_status.csv")
    if not status_rows:  # the sweep is still running (or was killed): the same columns from each job's status.json
        status_rows = []
        for name, job in jobs.items():
            status = read_json(job / "status.json")
            status_rows.append({"job": name, "status": status.get("status") or "running",
                                "seconds": status.get("seconds"), "error": status.get("error", "")})
    overrides = {}
    for name, job in jobs.items():
        listed = read_yaml(job / ".hydra" / "overrides.yaml")
        overrides[name] = [str(o) for o in listed] if isinstance(listed, list) else []
    shared = set.intersection(*map(set, overrides.values())) if len(overrides) > 1 else set()
    for row in status_rows:  # what sets each job apart: the overrides not shared by every job
        row["overrides"] = " ".join(o for o in overrides.get(str(row.get("job")), []) if o not in shared)

    def job_link(key: str, value: Any) -> str | None:
        job = jobs.get(str(value))
        if key == "job" and job is not None and (job / REPORT).is_file():
            return url(Path(job.name) / REPORT)
        return None

    merged = read_csv(sweep_dir / "summary.csv")  # a sweep-level merge (sharded sweeps write one)
    if not merged:
        merged = [{"job": name, **row} for name, job in jobs.items() for row in read_csv(job / "summary.csv")]
    multirun = read_yaml(sweep_dir / "multirun.yaml")
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
        files=[(name, url(Path(name))) for name in ("sweep_status.csv", "summary.csv", "multirun.yaml")
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


def rebuild(folder: str | Path, key_images_of: Callable[[Path], Sequence[str] | None]) -> list[Path]:
    """``digin report``: rebuild the page of a run folder, or of a sweep folder and every job in it; ``key_images_of``
    reads a run folder's key images (from its config.yaml: :func:`digin_cli.task_registry.run_key_images`)."""
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise DiginError(f"no folder '{folder}' — pass a run folder (outputs/<task>/runs/<run>) or a sweep folder "
                         "(outputs/<task>/multiruns/<sweep>)")
    if is_run_folder(folder):
        pages = [write_report(folder, key_images_of(folder))]
        if is_sweep_folder(folder.parent):
            pages.append(write_sweep_report(folder.parent))  # its job links may now point at a page
        return pages
    if is_sweep_folder(folder):
        pages = [write_report(job, key_images_of(job)) for job in _jobs(folder)]
        return [*pages, write_sweep_report(folder)]
    raise DiginError(f"'{folder}' is neither a digin run folder (config.yaml, status.json) nor a sweep folder "
                     "(multirun.yaml, sweep_status.csv) — pass the folder digin printed or wrote")
