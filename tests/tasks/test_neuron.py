"""task=neuron end to end on tiny models through the CLI: targets from a class ranking, object choice, both
directions, the top activating real images, resuming, and every bad input."""

from __future__ import annotations

import csv
import json

import pytest
from PIL import Image

pytestmark = pytest.mark.slow


def rows(path):
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


def test_neuron_end_to_end_ranking_objects_references_and_resume(data, digin, tmp_path):
    run = tmp_path / "run"
    args = ["task=neuron", "task.top_features_of=goldfish", "task.top_k=1", "task.direction=both",
            f"task.objects={data / 'objects.txt'}", "task.object_samples=2", "task.reference_class=goldfish",
            f"paths.imagenet_train={data / 'train'}", "task.top_images=2", "optimizer.steps=2", "optimizer.lr=0.05",
            f"hydra.run.dir={run}"]
    proc = digin(*args, output=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert json.loads((run / "status.json").read_text())["status"] == "ok"
    (top,) = rows(run / "ranking.csv")
    assert top["class"] == "goldfish" and top["rank"] == "1"
    n = int(top["feature"])
    neuron = run / f"neuron_{n}"
    assert [r["object"] for r in rows(neuron / "objects.csv")] == ["sand", "water"]
    assert Image.open(neuron / "neuron.png").size[1] > 3 * 128  # two generated rows + the real images
    summary = {r["direction"]: r for r in rows(run / "summary.csv")}
    assert set(summary) == {"max", "min"}
    for direction, sign in (("max", 1), ("min", -1)):
        item = neuron / direction / "seed_0"
        metrics = json.loads((item / "metrics.json").read_text())
        for name in ("init.png", "best.png", "iterates.png"):
            assert (item / name).is_file()
        s = metrics["summary"]
        assert sign * (s["phi_best"] - s["phi_init"]) > 0, (direction, s)  # phi_n rises for max, falls for min
        assert s["p_class_best"] is not None and s["predicted"] and s["peak_memory_mb"] > 0
        assert metrics["prompt"] in ("a photograph of a sand", "a photograph of a water")
    features = sorted(digin.cache.glob("features/*.safetensors"))
    assert features

    # Resume an interrupted run: the finished item is read back, the missing one is redone.
    (run / "status.json").unlink()
    (neuron / "min" / "seed_0" / "metrics.json").unlink()
    kept = (neuron / "max" / "seed_0" / "best.png").stat().st_mtime_ns
    again = digin(*args, output=tmp_path)
    assert again.returncode == 0, again.stderr
    assert (neuron / "max" / "seed_0" / "best.png").stat().st_mtime_ns == kept
    assert (neuron / "min" / "seed_0" / "metrics.json").is_file()
    status = {r["direction"]: r["status"] for r in rows(run / "summary.csv")}
    assert status == {"max": "done before", "min": "ok"}
    assert sorted(digin.cache.glob("features/*.safetensors")) == features  # statistics reused, not recomputed


@pytest.mark.parametrize("case", ["neuron_range", "objects_missing", "objects_empty", "train_unset", "class_empty",
                                  "unknown_class", "bad_direction", "nonlinear_head"])
def test_bad_inputs(data, digin_here, expect_error, tmp_path, case):
    args, needles = {
        "neuron_range": (["task.neurons=[64]"], ["feature 64 is out of range", "0..63"]),
        "objects_missing": (["task.neurons=[3]", f"task.objects={data / 'nope.txt'}"], ["nope.txt", "task.objects"]),
        "objects_empty": (["task.neurons=[3]", f"task.objects={data / 'empty.txt'}"], ["empty.txt", "is empty"]),
        "train_unset": (["task.top_features_of=goldfish"], ["paths.imagenet_train is unset"]),
        "class_empty": (["task.top_features_of=tench", f"paths.imagenet_train={data / 'train'}"],
                        ["'tench' has no images"]),
        "unknown_class": (["task.top_features_of=goldfsh", f"paths.imagenet_train={data / 'train'}"],
                          ["goldfsh", "goldfish"]),
        "bad_direction": (["task.neurons=[3]", "task.direction=up"], ["task.direction=max, min or both"]),
        "nonlinear_head": (["task.top_features_of=goldfish", f"paths.imagenet_train={data / 'train'}",
                            "classifier._target_=tests.tasks.nonlinear_head.MlpHeadClassifier"],
                           ["not a linear layer", "task.neurons"]),
    }[case]
    proc = digin_here("task=neuron", *args, output=tmp_path)
    expect_error(proc, *needles)
    assert not list(tmp_path.glob("neuron/runs/*/neuron_*"))
