"""A real browser answers a two-run study: headless Chromium driven by Selenium clicks through every item, reloads
half-way, downloads the answers, and ``digin study score`` reads them back to the numbers the clicks imply."""

from __future__ import annotations

import csv
import json
import shutil
import time
from pathlib import Path

import pytest

from digin_cli.study.make import make_study
from tests.cli_helpers import run_digin
from tests.study.helpers import EVIL, picture, planted, tiny_checker, vce_run

pytestmark = pytest.mark.browser


def browser(downloads: Path, profile: Path):
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is in the dev extra (make dev)")
    chromium, driver = shutil.which("chromium") or shutil.which("chromium-browser"), shutil.which("chromedriver")
    if not (chromium and driver):
        pytest.skip("no chromium / chromedriver on PATH: make chromium installs Debian's chromium + chromium-driver")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
                 f"--user-data-dir={profile}"):
        options.add_argument(flag)
    options.add_experimental_option("prefs", {"download.default_directory": str(downloads),
                                              "download.prompt_for_download": False})
    return webdriver.Chrome(service=Service(executable_path=driver), options=options)


def policy(participant: str, position: int, run: str, question: str) -> int | str:
    """What a participant answers, knowing (from the image files) which run an image came from."""
    if question == "q1":
        return 1 if run == "A" else 0  # everyone finds A realistic, B not
    if question == "q2":
        return 1  # both show the target
    if question == "q3":
        return int(run == "A" or (participant == "p2" and position % 2 == 0))
    return "equal" if position == 0 and participant == "p1" else "A"  # better: A, once equal


def served(folder: Path):
    """``folder`` over http://127.0.0.1 (a thread): how a hosted study is opened. Headless Chromium lost a file://
    page's localStorage across a reload about 1 run in 6 on a loaded machine (every key gone, though another tab had
    just read them back); an http origin's storage is what the reload test is about."""
    import functools
    import http.server
    import threading

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(folder)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def _imul(a: int, b: int) -> int:
    return (a * b) & 0xFFFFFFFF


def shown_order(study_id: str, seed: int, participant: str, items: int, runs: list[str]) -> list[tuple[int, list]]:
    """The page's seeded shuffle (cyrb53 hash -> mulberry32, study.html.j2) restated in 32-bit integer arithmetic:
    which item, with which run on the left, a participant sees at each position. Restated so the test can say in
    advance what the browser must show, independent of the random study id."""
    h1, h2 = 0xDEADBEEF, 0x41C6CE57
    for c in f"{study_id}|{seed}|{participant}":
        h1, h2 = _imul(h1 ^ ord(c), 2654435761), _imul(h2 ^ ord(c), 1597334677)
    h1 = _imul(h1 ^ (h1 >> 16), 2246822507) ^ _imul(h2 ^ (h2 >> 13), 3266489909)
    h2 = _imul(h2 ^ (h2 >> 16), 2246822507) ^ _imul(h1 ^ (h1 >> 13), 3266489909)
    state = h2 ^ h1

    def random() -> float:
        nonlocal state
        state = (state + 0x6D2B79F5) & 0xFFFFFFFF
        t = _imul(state ^ (state >> 15), state | 1)
        t ^= (t + _imul(t ^ (t >> 7), t | 61)) & 0xFFFFFFFF
        return (t ^ (t >> 14)) / 4294967296

    order = list(range(items))
    for i in range(items - 1, 0, -1):
        j = int(random() * (i + 1))
        order[i], order[j] = order[j], order[i]
    return [(i, runs[::-1] if len(runs) > 1 and random() < 0.5 else list(runs)) for i in order]


def answer_study(driver, study: Path, participant: str, runs_of: dict[str, str], reload_at: int,
                 url: str | None = None) -> list[list]:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    data = json.loads((study / "study.json").read_text())
    driver.get(url or (study / "index.html").as_uri())
    if driver.find_element(By.ID, "another").is_displayed():  # the previous participant's finished page
        driver.find_element(By.ID, "another").click()
    driver.find_element(By.ID, "participant").send_keys(participant)
    driver.find_element(By.ID, "begin").click()
    seen = []
    for position in range(len(data["items"])):
        if position == reload_at:  # everything answered so far must survive a reload
            driver.refresh()
            expected = f"Item {position + 1} of {len(data['items'])}"
            try:  # the page renders from localStorage after load: wait for it, then compare
                WebDriverWait(driver, 20).until(lambda d: d.find_element(By.ID, "progress").text == expected)
            finally:
                assert driver.find_element(By.ID, "progress").text == expected, driver.execute_script(
                    "return JSON.stringify({ready: document.body.dataset.ready, url: location.href, "
                    "shown: ['start', 'item', 'done'].filter(s => !document.getElementById(s).hidden), "
                    "storage: Object.assign({}, localStorage)})")
            driver.find_element(By.ID, "back").click()
            checked = driver.find_elements(By.CSS_SELECTOR, "#questions input:checked")
            assert len(checked) == 3 * 2 + 1  # the previous item's answers came back from localStorage
            driver.find_element(By.ID, "next").click()
        WebDriverWait(driver, 20).until(lambda d: d.execute_script(  # every image loads, from disk
            "return Array.from(document.images).every(im => im.complete && im.naturalWidth > 0)"))
        figures = driver.find_elements(By.CSS_SELECTOR, "figure.explanation")
        names = [Path(f.find_element(By.TAG_NAME, "img").get_attribute("src")).name for f in figures]
        sides = [runs_of[name] for name in names]
        classes = driver.find_element(By.ID, "classes").text
        (item,) = [i for i, it in enumerate(data["items"]) if Path(it["images"]["A"]).name in names]
        seen.append([sides, classes, item])
        assert driver.find_element(By.ID, "next").get_attribute("disabled")  # nothing answered yet
        for question in ("q1", "q2", "q3"):
            for side, run in enumerate(sides):
                value = policy(participant, position, run, question)
                driver.find_element(By.ID, f"q-{question}-{side}-{'yes' if value else 'no'}").click()
        choice = policy(participant, position, "", "better")
        driver.find_element(By.ID, f"q-better-{'equal' if choice == 'equal' else sides.index(choice)}").click()
        driver.find_element(By.ID, "next").click()
    driver.find_element(By.ID, "download").click()
    return seen


def wait_for(folder: Path, pattern: str) -> Path:
    """The downloaded file, once complete: Chrome reserves the final name with an empty placeholder while the
    ``.crdownload`` is written, and quitting the browser before it is done deletes both."""
    for _ in range(300):
        partial = list(folder.glob("*.crdownload"))
        for path in folder.glob(pattern):
            try:
                if not partial and path.stat().st_size and json.loads(path.read_text()):
                    return path
            except (OSError, ValueError):
                pass
        time.sleep(0.1)
    raise AssertionError(f"no {pattern} downloaded into {folder}")


def test_browser_answers_a_two_run_study_and_score_reads_it_back(tmp_path):
    a = vce_run(tmp_path, "run_a")
    b = vce_run(tmp_path, "run_b", name="best.png", unsafe=("dog.png", "tiger cat"))
    checker = tiny_checker(planted(), [picture(i) for i in range(60)] + [picture(i * 7 + 3) for i in range(60)])
    study = make_study([a, b], "uvce", tmp_path / "study", checker, checker.name, seed=5)
    data = json.loads((study / "study.json").read_text())
    items = len(data["items"])
    assert items == 5  # 6 (image, target) pairs minus the one whose B image the checker flags
    runs_of = {}
    for item in data["items"]:
        runs_of[Path(item["images"]["A"]).name] = "A"
        runs_of[Path(item["images"]["B"]).name] = "B"

    downloads = tmp_path / "downloads"
    downloads.mkdir()
    driver = browser(downloads, tmp_path / "profile")
    try:
        server = served(study)
        url = f"http://127.0.0.1:{server.server_address[1]}/index.html"
        try:
            seen = {p: answer_study(driver, study, p, runs_of, reload_at=2, url=url) for p in ("p1", "p2")}
        finally:
            server.shutdown()
        files = [wait_for(downloads, f"answers-{data['study_id']}-{p}.json") for p in ("p1", "p2")]
    finally:
        driver.quit()
    orders = {p: [row[0] for row in seen[p]] for p in seen}
    # Each participant sees the order and sides seeded by (study id, seed, their id): the page's shuffle, exactly.
    # (Comparing p1's with p2's would fail by chance: the study id is random, and 5 items' sides coincide 1 in 32.)
    predict = lambda p: shown_order(data["study_id"], data["seed"], p, items, ["A", "B"])  # noqa: E731
    for p in seen:
        assert [(row[2], row[0]) for row in seen[p]] == predict(p)
    orders_of_many = [predict(f"participant-{n}") for n in range(20)]
    assert len({repr(o) for o in orders_of_many}) > 1  # the id moves the order ...
    assert {tuple(s) for o in orders_of_many for _, s in o} == {("A", "B"), ("B", "A")}  # ... and both sides occur
    assert any(EVIL in row[1] for row in seen["p1"])  # the hostile class name shown as text

    sheets = [json.loads(f.read_text()) for f in files]
    for sheet, p in zip(sheets, ("p1", "p2")):
        assert sheet["participant"] == p and sheet["study_id"] == data["study_id"]
        assert sheet["items_checksum"] == data["items_checksum"]
        assert [r["sides"] for r in sheet["responses"]] == orders[p]

    proc = run_digin("study", "score", study, *files, timeout=300)
    assert proc.returncode == 0, proc.stderr
    rows = {(r["question"], r["run"], r["statistic"]): r for r in csv.DictReader((study / "results.csv").open())}
    value = lambda q, run, stat: float(rows[(q, run, stat)]["value"])  # noqa: E731
    # Expected from the policy alone: 2 participants x 5 items = 10 ratings per (question, run).
    assert value("q1", "A", "mean") == 1.0 and value("q1", "B", "mean") == 0.0
    assert value("q2", "A", "mean") == 1.0 == value("q2", "B", "mean")
    assert value("q3", "B", "mean") == pytest.approx(3 / 10)  # p2 says yes on positions 0, 2, 4
    assert value("better", "A", "share") == pytest.approx(9 / 10)
    assert value("better", "equal", "share") == pytest.approx(1 / 10) and value("better", "B", "share") == 0.0
    assert value("q1", "A-B", "mean_difference") == 1.0
    assert int(rows[("q1", "A", "mean")]["n"]) == 10
    assert float(rows[("q3", "B", "mean")]["ci_low"]) < 0.3 < float(rows[("q3", "B", "mean")]["ci_high"])
    assert "<td>100.0 %</td>" in (study / "results.html").read_text()


def test_browser_rates_resemblance_against_the_highlighted_image(tmp_path):
    """DiffExplainer's form in a one-run study: each explanation rated 1-5 against the highlighted real image."""
    from selenium.webdriver.common.by import By

    a = vce_run(tmp_path, "run_a")
    never = lambda images: [False] * len(images)  # noqa: E731  (the checker is tested above and in test_safety)
    study = make_study([a], "resemblance", tmp_path / "study", never, "none", seed=1)
    data = json.loads((study / "study.json").read_text())
    rating = {item["images"]["A"]: 1 + n % 5 for n, item in enumerate(data["items"])}  # a rating per image
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    driver = browser(downloads, tmp_path / "profile")
    try:
        driver.get((study / "index.html").as_uri() + "?participant=r1")  # the id may come with the link
        for _ in data["items"]:
            (reference,) = driver.find_elements(By.CSS_SELECTOR, "figure.reference img")  # highlighted
            (image,) = driver.find_elements(By.CSS_SELECTOR, "figure.explanation img")
            src = "images/" + Path(image.get_attribute("src")).name
            (item,) = [i for i in data["items"] if i["images"]["A"] == src]
            assert "images/" + Path(reference.get_attribute("src")).name == item["images"]["reference:mask_overlay.png"]
            driver.find_element(By.ID, f"q-resemblance-0-{rating[src]}").click()
            driver.find_element(By.ID, "next").click()
        driver.find_element(By.ID, "download").click()
        answers = wait_for(downloads, "answers-*-r1.json")
    finally:
        driver.quit()
    proc = run_digin("study", "score", study, answers, timeout=300)
    assert proc.returncode == 0, proc.stderr
    rows = {(r["question"], r["run"], r["statistic"]): r for r in csv.DictReader((study / "results.csv").open())}
    assert float(rows[("resemblance", "A", "mean")]["value"]) == pytest.approx(sum(rating.values()) / len(rating))
