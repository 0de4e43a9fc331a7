"""report.html from folders laid out the way tasks write them: items, fallbacks, escaping, sweeps, the W&B table."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from digin_cli.errors import DiginError
from digin_cli.io import report
from digin_cli.io.atomic import atomic_write_json, atomic_write_text
from tests.report_checks import check_page, images

EVIL = "<script>alert(1)</script>"


def png(path: Path, color=(200, 30, 30), size=(8, 8)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).save(path)


def make_run(root: Path, seeds=(0, 2, 10), failed: str | None = "broken") -> Path:
    """A disagreement-like run: <class>/seed_<s>/{init,best,iterates}.png + metrics.json, one failed item."""
    run = root / "run"
    atomic_write_text(run / "config.yaml", f"task:\n  name: disagreement\n  prompt: '{EVIL} {{}}'\n")
    atomic_write_text(run / ".hydra" / "overrides.yaml", f"- task=disagreement\n- 'task.prompt={EVIL}'\n")
    atomic_write_json(run / "status.json", {"status": "ok", "task": "disagreement", "seconds": 3.5,
                                            "peak_memory_mb": 812.25, "items": len(seeds), "flip_rate": 0.5})
    for n, seed in enumerate(seeds):
        item = run / "koala" / f"seed_{seed}"
        for name in ("init.png", "best.png", "iterates.png", "extra.png"):
            png(item / name, (n * 40, 100, 100))
        atomic_write_json(item / "metrics.json", {"class": EVIL, "seed": seed, "iterates": [{"index": 0}],
                                                  "summary": {"p_f_best": 0.1 * (3 - n), "flipped": n == 1}})
    if failed:
        atomic_write_text(run / "koala" / failed / "error.log", "Traceback ...\nRuntimeError: out of memory\n")
    return run


def test_run_page_has_one_escaped_row_per_item_in_natural_order(tmp_path):
    run = make_run(tmp_path)
    page = check_page(report.write_report(run, ["init.png", "best.png", "missing.png"]))
    assert page.items == ["item-0", "item-1", "item-2", "item-3"]
    html = (run / "report.html").read_text()
    assert EVIL not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert html.index("seed_2") < html.index("seed_10")  # natural order, not 10 before 2
    srcs = images(page)
    assert srcs[:3] == ["koala/seed_0/init.png", "koala/seed_0/best.png", "koala/seed_0/iterates.png"]
    assert not any("extra.png" in s for s in srcs), "only the task's key images and the strip are shown"
    assert 'href="koala/seed_0/extra.png"' in html  # the rest stays one click away
    assert "RuntimeError: out of memory" in html and "812.2" in html and "flip_rate" in html
    numbers = page.rows["numbers"]
    assert [row[0] for row in numbers] == ["koala / broken", "koala / seed_0", "koala / seed_2", "koala / seed_10"]
    assert [row[1] for row in numbers] == ["failed", "ok", "ok", "ok"]
    assert "digin task=disagreement" in html


def test_key_image_file_named_like_markup_is_escaped_and_percent_encoded(tmp_path):
    run = make_run(tmp_path, seeds=(0,), failed=None)
    evil_file = "<script>alert(1)&.png"
    png(run / "koala" / "seed_0" / evil_file)
    page = check_page(report.write_report(run, [evil_file, "best.png"]))  # check_page: the file is found
    assert images(page)[0] == "%3Cscript%3Ealert%281%29%26.png".join(["koala/seed_0/", ""])
    html = (run / "report.html").read_text()
    assert "<script>alert" not in html and page.scripts == 1


def test_without_key_images_every_image_but_the_strip_is_shown(tmp_path):
    run = make_run(tmp_path, seeds=(0,), failed=None)
    page = check_page(report.write_report(run, None))
    assert images(page) == [f"koala/seed_0/{n}" for n in ("best.png", "extra.png", "init.png", "iterates.png")]


def test_single_file_items_take_their_numbers_from_summary_csv(tmp_path):
    run = tmp_path / "sample"
    atomic_write_text(run / "config.yaml", "task:\n  name: sample\n")
    for name in ("a_koala__seed3.png", "a_fox__seed3.png"):
        png(run / name)
    atomic_write_text(run / "summary.csv", "prompt,seed,status,file\na koala,3,ok,a_koala__seed3.png\n")
    atomic_write_text(run / "a_cat__seed3.error.log", "Traceback ...\nValueError: bad prompt\n")
    page = check_page(report.write_report(run, []))
    assert page.items == ["item-0", "item-1", "item-2"]
    assert page.rows["numbers"][0][:2] == ["a_cat__seed3", "failed"] and page.rows["numbers"].pop(0)
    assert images(page) == ["a_fox__seed3.png", "a_koala__seed3.png"]
    assert page.rows["numbers"][1][:3] == ["a_koala__seed3.png", "ok", "a koala"]
    assert "running" in (run / "report.html").read_text()  # no status.json yet


def test_sweep_page_links_jobs_and_merges_their_summaries(tmp_path):
    sweep = tmp_path / "sweep"
    atomic_write_text(sweep / "multirun.yaml", "hydra:\n  overrides:\n    task:\n    - seed=0,1\n")
    for job in ("0", "1"):
        run = make_run(sweep / "tmp", seeds=(int(job),), failed=None)
        run.rename(sweep / job)
        atomic_write_text(sweep / job / "summary.csv", f"class,seed,p_f_best\nkoala,{job},0.{job}5\n")
    report.write_report(sweep / "0", None)  # job 1 has no page yet: no link to it
    page = check_page(report.write_sweep_report(sweep))
    jobs = page.rows["jobs"]
    assert [row[:2] for row in jobs] == [["0", "ok"], ["1", "ok"]]
    assert ("a", {"href": "0/report.html"}) in page.tags and ("a", {"href": "1/report.html"}) not in page.tags
    assert [row[:4] for row in page.rows["summary"]] == [["0", "koala", "0", "0.05"], ["1", "koala", "1", "0.15"]]
    assert "digin -m seed=0,1" in (sweep / "report.html").read_text()
    atomic_write_text(sweep / "sweep_status.csv", "job,status,seconds,error\n0,ok,1.0,\n1,failed,2.0,boom\n")
    page = check_page(report.write_sweep_report(sweep))
    assert [row[:2] for row in page.rows["jobs"]] == [["0", "ok"], ["1", "failed"]]


def test_rebuild_writes_run_and_sweep_pages_and_rejects_other_folders(tmp_path):
    run = make_run(tmp_path)
    first = report.write_report(run, ["init.png"]).read_bytes()
    (run / "report.html").unlink()
    assert report.rebuild(run, lambda folder: ["init.png"] if folder == run else None) == [run / "report.html"]
    assert (run / "report.html").read_bytes() == first
    with pytest.raises(DiginError, match="neither a digin run folder"):
        report.rebuild(tmp_path / "run" / "koala", lambda folder: None)
    with pytest.raises(DiginError, match="no folder"):
        report.rebuild(tmp_path / "nope", lambda folder: None)


def test_refresh_warns_instead_of_failing_the_job(tmp_path, capsys):
    assert report.refresh(report.write_report, tmp_path / "not-a-run", None) is None
    assert "could not write report.html" in capsys.readouterr().err


def test_wandb_table_has_one_row_per_item_with_images(tmp_path, wandb_env):
    from digin_cli.io.tracking import Tracker

    import wandb

    run = make_run(tmp_path, seeds=(0, 1))  # two done items and one failed one (no images: empty cells)
    columns, rows = report.key_image_table(run, ["init.png", "best.png"])
    assert columns[:5] == ["item", "status", "init", "best", "iterates"] and len(rows) == 3
    logged = []
    with Tracker(mode="offline", project="digin-test", dir=str(tmp_path / "wb")) as tracker:
        log = tracker.run.log
        tracker.run.log = lambda data, **kw: (logged.append(data), log(data, **kw))
        tracker.log_table("key_images", columns, rows)
        run_dir = Path(tracker.run.dir).parent
    (table,) = logged[0].values()
    assert table.columns == columns and [row[0] for row in table.data] == ["koala / broken", "koala / seed_0",
                                                                         "koala / seed_1"]
    assert table.data[0][2] is None and all(isinstance(row[2], wandb.Image) for row in table.data[1:])
    (written,) = (run_dir / "files" / "media" / "table").glob("key_images_*.table.json")
    assert len(json.loads(written.read_text())["data"]) == 3
