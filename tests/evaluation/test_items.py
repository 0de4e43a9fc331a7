"""What ``digin evaluate`` reads from run folders written by hand here: neuron_cf items (no target class: no flip
rate or COUT, LPIPS over the kept object), either counterfactual file name, failed and unfinished items."""

import json

import numpy as np
import pytest
from PIL import Image

from digin_cli.errors import DiginError
from digin_cli.evaluation.evaluate import Backbones, evaluate, parse_metrics
from digin_cli.evaluation.items import collect, counterfactual_image


def picture(path, value, noise=0.0, seed=0):
    rng = np.random.default_rng(seed)
    array = np.clip(np.full((32, 32, 3), value) + noise * rng.standard_normal((32, 32, 3)), 0, 1)
    Image.fromarray((array * 255).round().astype(np.uint8)).save(path)


def neuron_cf_run(root, names=("counterfactual.png",)):
    run = root / "run"
    run.mkdir()
    (run / "config.yaml").write_text("task:\n  name: neuron_cf\n")
    (run / "status.json").write_text(json.dumps({"task": "neuron_cf", "status": "ok"}))
    for n in range(3):
        item = run / "img" / f"neuron_{n}"
        item.mkdir(parents=True)
        picture(item / "original.png", 0.5)
        for name in names:
            picture(item / name, 0.5, noise=0.1 * (n + 1), seed=n)
        mask = np.zeros((32, 32), np.uint8)
        mask[:, :16] = 255
        Image.fromarray(mask).save(item / "mask.png")
        summary = {"phi_before": 0.0, "phi_after": 1.0, "l1": 0.1 * n, "l2": 0.2 * n, "l1_foreground": 0.01,
                   "seconds": 2.0 + n, "peak_memory_mb": 100.0 * (n + 1)}
        (item / "metrics.json").write_text(json.dumps({"summary": summary, "error": None}))
    failed = run / "img" / "neuron_9"  # a failed item: error.log, no metrics.json
    failed.mkdir()
    (failed / "error.log").write_text("boom")
    return run


def test_neuron_cf_items_get_the_metrics_that_apply(tmp_path, random_lpips, random_inception):
    run = neuron_cf_run(tmp_path)
    result = evaluate(run, parse_metrics(None, simsiam=False),
                      Backbones(lpips=lambda: random_lpips, inception=lambda: random_inception), by_pair=True)
    (overall,) = result["groups"]  # no (start, target) pairs in neuron counterfactuals
    assert overall["n"] == 3
    assert "flip_rate" not in overall and "cout_mean" not in overall  # no target class
    assert overall["seconds_mean"] == pytest.approx(3.0) and overall["peak_memory_mb_max"] == 300.0
    assert overall["l1_foreground_mean"] == pytest.approx(0.01)
    lpips = [item["lpips"] for item in result["items"]]
    assert 0 < lpips[0] < lpips[1] < lpips[2]  # more noise, more LPIPS
    assert all("lpips_foreground" in item for item in result["items"])
    assert (run / "evaluation.json").is_file() and (run / "evaluation.csv").is_file()
    assert "fid" in overall and "split_fid" not in overall  # split-FID needs 2 items per half


def test_counterfactual_file_is_found_under_either_name(tmp_path):
    run = neuron_cf_run(tmp_path, names=("best.png",))
    items = collect(run)
    assert [counterfactual_image(i.folder).name for i in items] == ["best.png"] * 3
    both = tmp_path / "both"
    both.mkdir()
    for name in ("best.png", "counterfactual.png"):
        picture(both / name, 0.1)
    assert counterfactual_image(both).name == "counterfactual.png"


def test_folders_without_counterfactuals_are_refused_in_one_line(tmp_path):
    run = tmp_path / "sample_run"
    run.mkdir()
    (run / "status.json").write_text(json.dumps({"task": "sample", "status": "ok"}))
    with pytest.raises(DiginError, match="no finished counterfactual.*tasks found: sample"):
        collect(run)
    with pytest.raises(DiginError, match="no folder"):
        collect(tmp_path / "missing")


def test_metric_names_are_checked():
    assert "s3" not in parse_metrics(None, simsiam=False) and "s3" in parse_metrics(None, simsiam=True)
    assert parse_metrics("fid, cout,fid", simsiam=False) == ["fid", "cout"]
    with pytest.raises(DiginError, match="unknown metric 'coutt'.*did you mean.*cout"):
        parse_metrics("coutt", simsiam=False)
    with pytest.raises(DiginError, match="--simsiam"):
        parse_metrics("s3", simsiam=False)


def test_evaluation_without_a_backbone_fails_before_writing(tmp_path):
    run = neuron_cf_run(tmp_path)
    with pytest.raises(DiginError, match="inception"):
        evaluate(run, ["fid"], Backbones())
    assert not (run / "evaluation.json").exists()
