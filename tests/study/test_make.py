"""digin study make: items matched across runs by key, unsafe items left out, blinding, escaping, atomic output."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from PIL import Image

from digin_cli.errors import DiginError
from digin_cli.safety import sha256
from digin_cli.study.make import items_checksum, make_study
from digin_cli.study.questions import load_questionnaire
from tests.cli_helpers import one_line_error, run_digin
from tests.study.helpers import EVIL, IMAGES, TARGETS, picture, planted, tiny_checker, vce_run


@pytest.fixture(scope="module")
def checker():
    return tiny_checker(planted(), [picture(i) for i in range(60)] + [picture(i * 7 + 3) for i in range(60)])


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    a = vce_run(root, "run_a", skip=("dog.png", "tiger cat"))  # only in B: unmatched
    b = vce_run(root, "run_b", name="best.png", unsafe=("cat.png", EVIL))  # B's counterfactual here is flagged
    return a, b


def page_data(study: Path) -> dict:
    html = (study / "index.html").read_text("utf-8")
    (blob,) = re.findall(r'<script type="application/json" id="study-data">(.*?)</script>', html, re.S)
    return json.loads(blob)


def test_two_run_study_matches_items_and_leaves_out_unsafe_and_unmatched(runs, checker, tmp_path):
    a, b = runs
    out = make_study([a, b], "uvce", tmp_path / "study", checker, checker.name, seed=3)
    study = json.loads((out / "study.json").read_text())
    every = {f"{image} → {target}" for image in IMAGES for target in TARGETS}
    assert {item["key"] for item in study["items"]} == every - {"dog.png → tiger cat", f"cat.png → {EVIL}"}
    assert study["left_out"]["unmatched"] == {"B": ["dog.png → tiger cat"]}
    assert study["left_out"]["unsafe"] == {f"cat.png → {EVIL}": ["B"]}
    assert study["runs"] == {"A": str(a.resolve()), "B": str(b.resolve())}
    assert study["items_checksum"] == items_checksum(study["items"])
    assert [q["id"] for q in study["questions"]] == ["q1", "q2", "q3", "better"]
    for item in study["items"]:  # each role is the right source file, copied under a name that hides its run
        folder_a = a / Path(*[p for p in _slugs(item["key"])])
        folder_b = b / Path(*[p for p in _slugs(item["key"])])
        assert sha256(out / item["images"]["A"]) == sha256(folder_a / "counterfactual.png")
        assert sha256(out / item["images"]["B"]) == sha256(folder_b / "best.png")
        assert sha256(out / item["images"]["original"]) == sha256(folder_a / "original.png")
        assert all(re.fullmatch(r"images/[0-9a-f]{20}\.png", name) for name in item["images"].values())
    safety = json.loads((out / "safety.json").read_text())
    flagged = [path for path, v in safety["images"].items() if v["flagged"]]
    assert len(flagged) == 1 and flagged[0].endswith("best.png") and "cat" in flagged[0]
    assert not any(p.name.startswith(".") for p in tmp_path.iterdir())  # no staging folder left behind

    data = page_data(out)  # what the page gets: the same items, but never which folder is which run
    assert data["items"] == study["items"] and data["runs"] == ["A", "B"] and str(a) not in json.dumps(data)
    html = (out / "index.html").read_text("utf-8")
    assert EVIL not in html and "</script><img" not in html  # the class name cannot close the data's script
    assert not re.search(r"(src|href)=\"?(https?:)?//|<link", html)  # nothing from the network: opens offline
    assert sum(item["target"] == EVIL for item in data["items"]) == 2  # ... and still reaches the page intact


def _slugs(key: str) -> list[str]:
    from digin_cli.io.writer import slug

    image, target = key.split(" → ")
    return [slug(image), slug(f"{TARGETS.index(target) + 1}_{target}")]


def test_one_run_resemblance_study_shows_the_highlighted_reference(runs, checker, tmp_path):
    out = make_study([runs[0]], "resemblance", tmp_path / "study", checker, checker.name, seed=0)
    study = json.loads((out / "study.json").read_text())
    assert len(study["items"]) == len(IMAGES) * len(TARGETS) - 1
    item = study["items"][0]
    assert set(item["images"]) == {"A", "original", "reference:mask_overlay.png"}
    assert study["questions"][0]["type"] == "resemblance" and study["questions"][0]["scale"] == 5


def test_uvce_questionnaire_in_a_one_run_study_drops_the_preference(runs, checker, tmp_path, capfd):
    out = make_study([runs[0]], "uvce", tmp_path / "study", checker, checker.name)
    assert [q["id"] for q in json.loads((out / "study.json").read_text())["questions"]] == ["q1", "q2", "q3"]
    assert "no A/B preference" in capfd.readouterr().err


def test_hostile_question_text_is_escaped(runs, checker, tmp_path):
    config = tmp_path / "q.yaml"
    config.write_text(json.dumps({"title": EVIL, "instructions": EVIL, "questions": [
        {"id": "q1", "type": "likert", "text": EVIL, "scale": 7, "labels": [EVIL, "b"]}]}))
    out = make_study([runs[0]], config, tmp_path / "study", checker, checker.name)
    html = (out / "index.html").read_text("utf-8")
    assert EVIL not in html and "&lt;/script&gt;&lt;img" in html  # title and instructions, autoescaped
    assert page_data(out)["questions"][0]["text"] == EVIL


def test_refusals_leave_nothing_behind(runs, checker, tmp_path):
    a, b = runs
    existing = tmp_path / "taken"
    existing.mkdir()
    (existing / "x").write_text("x")
    with pytest.raises(DiginError, match="already exists"):
        make_study([a, b], "uvce", existing, checker, checker.name)
    with pytest.raises(DiginError, match="no finished item"):
        make_study([tmp_path / "taken"], "uvce", tmp_path / "s1", checker, checker.name)

    def broken(images):
        raise RuntimeError("checker crashed")

    with pytest.raises(RuntimeError):
        make_study([a, b], "uvce", tmp_path / "s2", broken, "broken")
    everything = lambda images: [True] * len(images)  # noqa: E731
    with pytest.raises(DiginError, match="no item is left"):
        make_study([a, b], "uvce", tmp_path / "s3", everything, "all")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["taken"]


@pytest.mark.parametrize("spec, needle", [
    ({"questions": [{"id": "q1", "type": "yesno", "text": "t"}]}, "did you mean: 'yes_no'"),
    ({"questions": [{"id": "q1", "type": "yes_no", "text": "t"}, {"id": "q1", "type": "yes_no", "text": "u"}]},
     "used twice"),
    ({"questions": [{"id": "Q 1", "type": "yes_no", "text": "t"}]}, "short lower-case name"),
    ({"questions": [{"id": "q1", "type": "likert", "text": "t", "scale": 1}]}, "scale must be"),
    ({"questions": []}, "no list of questions"),
])
def test_bad_questionnaires_are_one_line(tmp_path, spec, needle):
    path = tmp_path / "q.yaml"
    path.write_text(json.dumps(spec))
    with pytest.raises(DiginError, match=re.escape(needle)) as err:
        load_questionnaire(path, 2)
    assert "\n" not in str(err.value) and " — " in str(err.value)
    with pytest.raises(DiginError, match="uvce, resemblance|resemblance, uvce"):
        load_questionnaire("uvec", 2)


def test_cli_make_with_a_saved_checker_folder_and_offline_error(runs, checker, tmp_path):
    a, b = runs
    folder = tmp_path / "checker"
    checker.model.save_pretrained(folder)
    checker.processor.save_pretrained(folder)
    cli = ["study", "make", str(a), str(b)]
    proc = run_digin(*cli, "--out", tmp_path / "study", "--safety-checker", folder, "--seed", "1", timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == str(tmp_path / "study" / "index.html")
    study = json.loads((tmp_path / "study" / "study.json").read_text())
    assert study["left_out"]["unsafe"] == {f"cat.png → {EVIL}": ["B"]}  # the loaded checker flags the planted image

    proc = run_digin(*cli, "--out", tmp_path / "study2", timeout=300)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    assert "CompVis/stable-diffusion-safety-checker" in proc.stderr and not (tmp_path / "study2").exists()
    one_line_error(proc, "CompVis/stable-diffusion-safety-checker")
    proc = run_digin("study", "make", "--out", "x", timeout=300)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "usage: digin study make" in proc.stderr


@pytest.mark.slow
def test_a_study_of_two_real_vce_runs(checker, tmp_path):
    """Two tiny vce runs through the CLI (the layout vce really writes), then `digin study make` on them."""
    from PIL import ImageDraw

    inputs = tmp_path / "inputs"
    inputs.mkdir()
    image = Image.new("RGB", (64, 64), (40, 120, 200))
    ImageDraw.Draw(image).ellipse((16, 12, 48, 44), fill=(220, 90, 30))
    image.save(inputs / "fox.png")
    base = ["task=vce", "captioner=none", "generator=tiny", "classifier=tiny_a",
            "segmentation=tiny_sam", "device=cpu", f"task.images={inputs}", "task.targets=[goldfish]",
            "generator.num_steps=3", "optimizer.steps=1", "optimizer.augment.num=2", "task.inversion.inner_steps=2",
            "task.p2p.injections=[0.4]", "task.p2p.blends=[0.0]", f"paths.cache_dir={tmp_path / 'cache'}"]
    runs = []
    for name, lr in (("a", "0.01"), ("b", "0.2")):
        run = tmp_path / name
        proc = run_digin(*base, f"optimizer.lr={lr}", f"hydra.run.dir={run}", timeout=600)
        assert proc.returncode == 0, proc.stderr
        runs.append(run)
    out = make_study(runs, "uvce", tmp_path / "study", checker, checker.name, seed=0)
    (item,) = json.loads((out / "study.json").read_text())["items"]
    assert item["key"] == "fox → goldfish" and item["target"] == "goldfish"
    for label, run in zip("AB", runs):
        (folder,) = [p.parent for p in run.rglob("metrics.json")]
        assert sha256(out / item["images"][label]) == sha256(folder / "counterfactual.png")
