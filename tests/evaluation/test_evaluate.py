"""``digin evaluate`` end to end on tiny vce runs (one run and the same items as a sharded sweep), and ``make
eval-imagenet-pairs`` on tiny models with an ImageNet-layout folder made here."""

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image, ImageDraw

from digin_cli.evaluation import backbones as B
from digin_cli.evaluation.cli import main as evaluate_main
from digin_cli.evaluation.cli import real_backbones
from digin_cli.evaluation.evaluate import Backbones
from tests import cli_helpers
from tests.cli_helpers import one_line_error, run_digin

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
TINY = ["captioner=none", "generator=tiny", "classifier=tiny_a", "segmentation=tiny_sam", "device=cpu",
        "generator.num_steps=4", "optimizer.augment.num=4", "optimizer.steps=2", "optimizer.lr=0.05"]
ENV = {**os.environ, **cli_helpers.ENV, "PYTHONPATH": str(ROOT)}
SET_METRICS = ("fid", "kid_mean", "split_fid", "flip_rate", "l1_mean", "l2_background_median", "lpips_mean",
               "lpips_background_mean", "cout_mean", "s3_mean")


def run(*args, cwd=None):
    return run_digin(*args, env={"PYTHONPATH": str(ROOT)}, timeout=900, cwd=cwd)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    root = tmp_path_factory.mktemp("evaluate")
    (root / "images").mkdir()
    for name, colour, blob in (("fox", (40, 120, 200), (220, 90, 30)), ("box", (200, 180, 40), (30, 30, 160))):
        image = Image.new("RGB", (96, 80), colour)
        ImageDraw.Draw(image).ellipse((30, 20, 70, 60), fill=blob)
        image.save(root / "images" / f"{name}.png")
    return root


def vce_args(workdir):
    return ["task=vce", *TINY, f"task.images={workdir / 'images'}", "task.targets=[goldfish,tench]",
            f"paths.output_root={workdir / 'out'}", f"paths.cache_dir={workdir / 'cache'}"]


@pytest.fixture(scope="module")
def run_dir(workdir):
    proc = run(*vce_args(workdir), f"hydra.run.dir={workdir / 'run'}")
    assert proc.returncode == 0, proc.stderr
    return workdir / "run"


@pytest.fixture(scope="module")
def sweep_dir(workdir, run_dir):
    proc = run("-m", *vce_args(workdir), "task.shard_index=0,1", "task.num_shards=2",
               f"hydra.sweep.dir={workdir / 'sweep'}")
    assert proc.returncode == 0, proc.stderr
    return workdir / "sweep"


@pytest.fixture(scope="module")
def backbones(random_inception, random_lpips, random_simsiam):
    """The random-weight models where the real ones would load; the run's own classifier for COUT."""
    real = real_backbones(argparse_namespace(), torch.device("cpu"))
    return lambda: Backbones(inception=lambda: random_inception, lpips=lambda: random_lpips,
                             simsiam=lambda: B.simsiam_encoder(random_simsiam, torch.device("cpu")),
                             classifier=real.classifier)


def argparse_namespace():
    from digin_cli.evaluation.cli import parser

    return parser().parse_args(["unused", "--device", "cpu"])


def evaluate(folder, backbones, *options, simsiam=None):
    return evaluate_main([str(folder), "--device", "cpu", *(["--simsiam", str(simsiam)] if simsiam else []),
                          *options], backbones=backbones())


def test_evaluate_a_vce_run_writes_every_metric(run_dir, backbones, random_simsiam):
    result = evaluate(run_dir, backbones, simsiam=random_simsiam)
    (overall,) = [g for g in result["groups"] if g["group"] == "all"]
    assert overall["n"] == 4
    for key in SET_METRICS:
        assert isinstance(overall.get(key), float), key
    # The numbers tell the truth about the files: flips and closeness as the run recorded them, LPIPS of an edit > 0,
    # S³ of an edit < 1, COUT of each item within ACE's bounds, seconds / memory from the items' metrics.
    metrics = [json.loads(p.read_text()) for p in sorted(run_dir.glob("*/*/metrics.json"))]
    assert overall["flip_rate"] == sum(m["summary"]["flipped"] for m in metrics) / 4
    assert overall["l1_mean"] == pytest.approx(sum(m["summary"]["l1"] for m in metrics) / 4)
    assert overall["seconds_mean"] == pytest.approx(sum(m["seconds"] for m in metrics) / 4)
    assert overall["peak_memory_mb_max"] == max(m["peak_memory_mb"] for m in metrics)
    assert overall["lpips_mean"] > 0 and overall["s3_mean"] < 1 and overall["fid"] > 0
    assert all(-1 <= item["cout"] <= 1 for item in result["items"])
    # Files beside summary.csv, the same numbers; and the report page gained its section.
    on_disk = json.loads((run_dir / "evaluation.json").read_text())
    assert on_disk["groups"] == json.loads(json.dumps(result["groups"]))
    (row,) = list(csv.DictReader((run_dir / "evaluation.csv").open()))
    assert float(row["fid"]) == pytest.approx(overall["fid"]) and row["group"] == "all"
    page = (run_dir / "report.html").read_text()
    assert "digin evaluate" in page and f'data-value="{row["fid"]}"' in page  # the CSV's number, as the table holds it


def test_metric_set_is_an_option_and_lpips_background_sees_the_kept_region(run_dir, backbones):
    result = evaluate(run_dir, backbones, "--metrics", "lpips,closeness")
    (overall,) = result["groups"]
    assert "fid" not in overall and "cout_mean" not in overall and "flip_rate" not in overall
    assert {"lpips_mean", "lpips_background_mean", "l2_background_mean"} <= set(overall)
    assert all("cout" not in item and "s3" not in item for item in result["items"])


def test_sharded_sweep_merges_its_shards_to_the_run_numbers(run_dir, sweep_dir, backbones):
    assert len([p for p in sweep_dir.iterdir() if (p / "config.yaml").is_file()]) == 2
    single = evaluate(run_dir, backbones, "--by-pair")
    merged = evaluate(sweep_dir, backbones, "--by-pair")
    assert (sweep_dir / "evaluation.csv").is_file() and (sweep_dir / "summary.csv").is_file()
    assert {i["job"] for i in merged["items"]} == {"0", "1"}
    assert [i["item"] for i in merged["items"]] == [i["item"] for i in single["items"]]
    groups = {g["group"]: g for g in merged["groups"]}
    assert set(groups) == {g["group"] for g in single["groups"]}  # all + the 2 x 2 (image class, target) pairs
    # Each shard recomputed its items (per-item seeds): the same numbers up to float rounding in the saved pixels
    # (measured, relative: LPIPS 7e-6, COUT 2e-4 — a one-level pixel change reorders its path —, the rest < 1e-6).
    for reference in single["groups"]:
        assert set(groups[reference["group"]]) == set(reference)  # pair groups of 2 items have no split-FID
        for key in {"n", "fid", "kid_mean", "split_fid", "flip_rate", "l1_mean", "lpips_mean", "cout_mean"} & set(
                reference):
            assert groups[reference["group"]][key] == pytest.approx(reference[key], rel=1e-3), key
    assert "split_fid" in groups["all"]
    assert "Evaluation" in (sweep_dir / "report.html").read_text()


def test_cli_dispatch_and_one_line_errors(run_dir, tmp_path):
    proc = run("evaluate", str(run_dir), "--metrics", "flip_rate,closeness,cost", "--device", "cpu")
    assert proc.returncode == 0, proc.stderr
    assert "evaluation" in proc.stdout and (run_dir / "evaluation.csv").is_file()
    cases = {"unknown metric 'fidd'": ["--metrics", "fidd"], "needs a SimSiam checkpoint": ["--metrics", "s3"],
             "SimSiam checkpoint not found": ["--simsiam", str(tmp_path / "none.pth")]}
    for needle, options in cases.items():
        proc = run("evaluate", str(run_dir), *options)
        one_line_error(proc, needle)
        assert proc.returncode == 2
    empty = tmp_path / "not_a_run"
    empty.mkdir()
    proc = run("evaluate", str(empty))
    assert proc.returncode == 2 and "neither a digin run folder" in proc.stderr


def test_missing_weights_offline_fail_in_one_line_without_outputs(run_dir, tmp_path):
    for name in ("evaluation.json", "evaluation.csv"):
        (run_dir / name).unlink(missing_ok=True)
    proc = run_digin("evaluate", str(run_dir), "--metrics", "fid", "--device", "cpu", timeout=300,
                     env={"PYTHONPATH": str(ROOT), "TORCH_HOME": str(tmp_path / "torch")})
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert "weights-inception-2015-12-05-6726825d.pth" in proc.stderr and "--inception" in proc.stderr
    assert not (run_dir / "evaluation.json").exists()


PAIR_CLASSES = (340, 339, 293, 286, 285, 283)  # zebra, sorrel, cheetah, cougar, Egyptian cat, Persian cat


@pytest.fixture(scope="module")
def imagenet_val(tmp_path_factory):
    """An ImageNet-layout val folder: 1000 class folders (sorted position = class index); the six protocol classes
    hold one generated picture each, the others are empty."""
    root = tmp_path_factory.mktemp("imagenet") / "val"
    for n in range(1000):
        (root / f"c{n:04d}").mkdir(parents=True)
        if n in PAIR_CLASSES:
            image = Image.new("RGB", (72, 64), (n % 7 * 35, n % 5 * 50, 120))
            ImageDraw.Draw(image).ellipse((20, 14, 52, 48), fill=(230 - n % 3 * 60, 80, n % 11 * 20))
            image.save(root / f"c{n:04d}" / f"ILSVRC2012_val_{n:08d}.JPEG")
    return root


def make(*args, cwd):
    return subprocess.run(["make", "-s", "-f", str(ROOT / "Makefile"), "-o", ".venv/.installed", *args],
                          capture_output=True, text=True, timeout=1800, cwd=cwd,
                          env={k: v for k, v in ENV.items() if k not in ("IMAGENET_VAL", "MAKEFLAGS")})


def test_make_eval_imagenet_pairs_on_tiny_models(imagenet_val, tmp_path, backbones):
    tiny = " ".join([*TINY, "optimizer.steps=1", "task.images_per_class=1", f"paths.cache_dir={tmp_path / 'cache'}",
                     f"paths.output_root={tmp_path / 'out'}"])
    out = tmp_path / "pairs"
    proc = make("eval-imagenet-pairs", f"IMAGENET_VAL={imagenet_val}", "SHARDS=2", f"PAIRS_OUT={out}",
                f"DIGIN={sys.executable} -m digin_cli.cli", f"ARGS={tiny}",
                "EVAL_ARGS=--metrics flip_rate,closeness,cout,cost --device cpu", cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    items = sorted(out.glob("*/*/*/metrics.json"))
    assert len(items) == 6  # 3 pairs x both directions x 1 image
    assert {p.parent.parent.parent.name for p in items} == {"0", "1"}  # two shards
    table = proc.stdout[proc.stdout.index("ImageNet pairs"):]
    for pair, ace in (("zebra ↔ sorrel", "67.7"), ("cheetah ↔ cougar", "70.2"), ("Egyptian cat ↔ Persian", "93.6")):
        assert pair in table and ace in table, table
    assert "as reported" in table
    # The same sweep with every image metric (random-weight backbones): each pair holds its 2 counterfactuals.
    result = evaluate(out, backbones, "--protocol", "imagenet_pairs")
    pairs = [g for g in result["groups"] if "↔" in g["group"]]
    assert len(pairs) == 3 and all(g["n"] == 2 and g["fid"] >= 0 for g in pairs)


def test_make_eval_imagenet_pairs_fails_fast_without_imagenet(tmp_path):
    proc = make("eval-imagenet-pairs", cwd=tmp_path)
    assert proc.returncode != 0 and "IMAGENET_VAL" in proc.stdout + proc.stderr
    proc = make("eval-imagenet-pairs", f"IMAGENET_VAL={tmp_path / 'missing'}", cwd=tmp_path)
    assert proc.returncode != 0 and "not found" in proc.stdout + proc.stderr
    assert not (tmp_path / "outputs").exists()
