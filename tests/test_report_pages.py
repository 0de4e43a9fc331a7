"""report.html end to end through the CLI on tiny models: disagreement, vce, a 2-job sweep, a killed job,
``digin report`` on folders without a page, and the page in headless Chromium."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
from PIL import Image, ImageDraw

from tests.cli_helpers import DIGIN, digin_env, one_line_error, run_digin
from tests.report_checks import Page, check_page, images

pytestmark = pytest.mark.slow

FAST = ["experiment=demo", "optimizer.steps=2", "optimizer.augment.num=2", "generator.num_steps=3"]
EVIL = "<script>alert(1)</script>"
PROMPT = f"task.prompt='{EVIL} a photograph of a {{}}'"  # a config string that must come out escaped


def digin(*args, timeout=300, env=None):
    return run_digin(*args, env=env, timeout=timeout)


def only(pattern: str, root: Path) -> Path:
    (found,) = root.glob(pattern)
    return found


def done_items(run: Path) -> set[str]:
    return {" / ".join(p.parent.relative_to(run).parts) for p in run.rglob("metrics.json")}


def item_names(page: Page) -> list[str]:
    return [row[0] for row in page.rows["numbers"]]


def assert_escaped(page_path: Path) -> None:
    html = page_path.read_text()
    assert EVIL not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html


def rebuilds_identically(folder: Path, pages: list[Path]) -> None:
    before = {p: p.read_bytes() for p in pages}
    for p in pages:
        p.unlink()
    proc = digin("report", str(folder))
    assert proc.returncode == 0, proc.stderr
    assert {p: p.read_bytes() for p in pages} == before


@pytest.fixture(scope="module")
def disagreement_run(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("report_disagreement")
    proc = digin(*FAST, "task.classes=[goldfish]", "task.seeds=[0,1]", PROMPT, f"paths.output_root={root}",
                 "logger=offline", env={"WANDB_MODE": "offline", "WANDB_SILENT": "true"})
    assert proc.returncode == 0, proc.stderr
    return only("disagreement/runs/*", root)


def test_disagreement_page(disagreement_run):
    page = check_page(disagreement_run / "report.html")
    assert sorted(item_names(page)) == sorted(done_items(disagreement_run)) == ["1_goldfish / seed_0",
                                                                               "1_goldfish / seed_1"]
    assert len(page.items) == 2
    assert images(page)[:3] == ["1_goldfish/seed_0/init.png", "1_goldfish/seed_0/best.png", "1_goldfish/seed_0/iterates.png"]
    assert_escaped(disagreement_run / "report.html")
    html = (disagreement_run / "report.html").read_text()
    assert "digin experiment=demo" in html and 'class="status ok"' in html and "<details>" in html
    (table,) = disagreement_run.glob("wandb/offline-run-*/files/media/table/key_images_*.table.json")
    assert len(json.loads(table.read_text())["data"]) == 2  # W&B: the same key images, one row per item


def test_digin_report_rebuilds_the_same_page_and_escapes_file_names(disagreement_run, tmp_path):
    rebuilds_identically(disagreement_run, [disagreement_run / "report.html"])
    run = shutil.copytree(disagreement_run, tmp_path / "run")
    # A file dropped into an item folder is linked on the rebuilt page, its name escaped and percent-encoded.
    shutil.copy(run / "1_goldfish" / "seed_0" / "best.png", run / "1_goldfish" / "seed_0" / "<script>x.png")
    assert digin("report", str(run)).returncode == 0
    page = check_page(run / "report.html")
    assert "1_goldfish/seed_0/%3Cscript%3Ex.png" in page.references()
    assert "&lt;script&gt;x.png" in (run / "report.html").read_text()
    bad = digin("report", str(tmp_path / "missing"))
    assert bad.returncode == 2 and one_line_error(bad).startswith("digin: error: no folder")
    usage = digin("report")
    assert usage.returncode == 2 and usage.stderr.count("\n") == 1 and "usage: digin report <" in usage.stderr


def test_vce_page(tmp_path):
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    image = Image.new("RGB", (96, 80), (40, 120, 200))
    ImageDraw.Draw(image).ellipse((30, 20, 70, 60), fill=(220, 90, 30))
    image.save(inputs / "<script>fox.png")  # a file named like markup
    proc = digin("task=vce", "generator=tiny", "classifier=tiny_a", "segmentation=tiny_sam", "captioner=none",
                 "device=cpu",
                 f"task.images={inputs}", "task.targets=[goldfish]", "generator.num_steps=3", "optimizer.steps=1",
                 "optimizer.augment.num=2", "task.inversion.inner_steps=2", "task.p2p.injections=[0.4]",
                 "task.p2p.blends=[0.0]", f"captioner.template='an image of a {{}} {EVIL}'",
                 f"paths.output_root={tmp_path / 'out'}", f"paths.cache_dir={tmp_path / 'cache'}")
    assert proc.returncode == 0, proc.stderr
    run = only("out/vce/runs/*", tmp_path)
    page = check_page(run / "report.html")
    assert len(page.items) == 1 and item_names(page) == sorted(done_items(run))
    item = "script_fox/1_goldfish"
    assert images(page) == [f"{item}/{n}.png" for n in ("original", "mask_overlay", "init", "counterfactual",
                                                        "iterates")]
    assert_escaped(run / "report.html")  # the caption carries the template's markup
    assert "flip_rate" in (run / "report.html").read_text()
    rebuilds_identically(run, [run / "report.html"])


def test_two_job_sweep_pages(tmp_path):
    sweep = tmp_path / "sweep"
    proc = digin("-m", *FAST, "task.classes=[goldfish]", "task.seeds=[0]", "seed=0,1", PROMPT,
                 f"paths.output_root={tmp_path}", f"hydra.sweep.dir={sweep}")
    assert proc.returncode == 0, proc.stderr
    for job in ("0", "1"):
        job_page = check_page(sweep / job / "report.html")
        assert item_names(job_page) == ["1_goldfish / seed_0"] and len(job_page.items) == 1
        assert ("a", {"href": "../report.html"}) in job_page.tags
    page = check_page(sweep / "report.html")
    assert [row[:2] for row in page.rows["jobs"]] == [["0", "ok"], ["1", "ok"]]
    assert {a["href"] for tag, a in page.tags if tag == "a"} >= {"0/report.html", "1/report.html"}
    assert [row[0] for row in page.rows["summary"]] == ["0", "1"]  # one merged row per item, with its job
    assert_escaped(sweep / "report.html")  # the jobs' overrides hold the prompt
    rebuilds_identically(sweep, [sweep / "report.html", sweep / "0" / "report.html", sweep / "1" / "report.html"])


def test_killed_job_leaves_a_page_of_the_items_it_finished(tmp_path):
    args = [*FAST, "optimizer.steps=4", "task.classes=[goldfish]", "task.seeds=[0,1,2,3]",
            f"paths.output_root={tmp_path}"]
    proc = subprocess.Popen([*DIGIN, *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=digin_env())
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and proc.poll() is None:
            pages = list(tmp_path.glob("disagreement/runs/*/report.html"))
            if pages and 'id="item-0"' in pages[0].read_text():
                break
            time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    run = only("disagreement/runs/*", tmp_path)
    finished = done_items(run)
    assert 0 < len(finished) < 4, "the kill must land mid-job"
    page = check_page(run / "report.html")
    assert sorted(item_names(page)) == sorted(finished)
    assert 'class="status running"' in (run / "report.html").read_text()


# ----------------------------------------------------------------------------------------- in a real browser


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if path := shutil.which(name):
            return path
    pytest.skip("no chromium on PATH: install Debian's `chromium` (make chromium) to run the browser check")


def dump_dom(url: str) -> Page:
    with tempfile.TemporaryDirectory(prefix="digin-chromium-") as profile:
        proc = subprocess.run(
            [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={profile}", "--virtual-time-budget=5000", "--dump-dom", url],
            capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    dom = Path(profile + ".html")
    dom.write_text(proc.stdout)
    try:
        return Page(dom)
    finally:
        dom.unlink()


def body(page: Page) -> dict:
    return next(attrs for tag, attrs in page.tags if tag == "body")


@pytest.mark.browser
def test_page_in_chromium_loads_every_image_and_sorts(disagreement_run, tmp_path):
    url = (disagreement_run / "report.html").as_uri()
    page = dump_dom(url)
    assert body(page)["data-images"] == f"loaded {len(images(page))}" and len(images(page)) == 6

    index = [a.get("data-key") for tag, a in page.tags if tag == "th"].index("p_f_best")
    values = {row[0]: float(row[index]) for row in page.rows["numbers"]}
    ascending = [row[0] for row in dump_dom(url + "#sort=p_f_best").rows["numbers"]]
    descending = [row[0] for row in dump_dom(url + "#sort=-p_f_best").rows["numbers"]]
    assert ascending == sorted(values, key=values.get) and descending == ascending[::-1]
    assert ascending != descending  # so one of them is not the page's own order: sorting moved rows

    broken = shutil.copytree(disagreement_run, tmp_path / "broken")
    (broken / "1_goldfish" / "seed_1" / "best.png").write_bytes(b"not a png")
    assert body(dump_dom((broken / "report.html").as_uri()))["data-images"] == "missing 1_goldfish/seed_1/best.png"
