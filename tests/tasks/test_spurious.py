"""task=spurious end to end on tiny models through the CLI, resuming, and every bad input of the task.

The end-to-end runs go through a real ``digin`` process; the bad inputs call the same console-script entry point
in-process (``cli.main`` with ``sys.argv``), which skips a Python start and the library imports per case.
"""

import csv
import json
import sys

import huggingface_hub.constants
import pytest
from hydra.core.global_hydra import GlobalHydra

from tests.cli_helpers import one_line_error, run_digin

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    root = tmp_path_factory.mktemp("spurious")
    (root / "annotations.csv").write_text("class,feature,label,animacy\n"
                                          "tench,3,core,animate\ntench,5,spurious,animate\n")
    return root


BASE = ["task=spurious", "generator=tiny_lcm", "classifier=tiny_a", "segmentation=tiny_grounded_sam", "device=cpu",
        "optimizer.steps=2", "task.num_samples=2"]


def digin(workdir, *args, output="out"):
    """A real ``digin`` process."""
    base = [*BASE, f"paths.output_root={workdir / output}", f"paths.cache_dir={workdir / 'cache'}"]
    return run_digin(*base, *args)


def digin_inprocess(monkeypatch, capsys, workdir, *args, output, base=BASE):
    """``digin base args`` through ``cli.main`` in this process: (exit code, stdout, stderr)."""
    from digin_cli import cli

    monkeypatch.setattr(sys, "argv", ["digin", *base, f"paths.output_root={workdir / output}",
                                      f"paths.cache_dir={workdir / 'cache'}", *args])
    GlobalHydra.instance().clear()
    code = 0
    try:
        cli.main()
    except SystemExit as exit_:
        code = exit_.code
    finally:
        GlobalHydra.instance().clear()
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def no_items(workdir, output):
    run = workdir / output / "spurious" / "runs"
    return not list(run.glob("*/*/feature_*/metrics.json")) and not list(run.glob("*/agreement.csv"))


def test_end_to_end_writes_table_grids_agreement_and_resumes(workdir):
    run_dir = workdir / "e2e"
    # threshold 0: every box of the random detector is kept, so r > 0 and the masks show in the overlays.
    common = [f"task.annotations={workdir / 'annotations.csv'}", "segmentation.threshold=0.0", "task.delta=0.5",
              f"hydra.run.dir={run_dir}"]
    proc = digin(workdir, *common)
    assert proc.returncode == 0, proc.stderr
    for feature in (3, 5):
        item = run_dir / "tench" / f"feature_{feature}"
        metrics = json.loads((item / "metrics.json").read_text())
        r = [s["r"] for s in metrics["segmented"]]
        assert len(r) == 2 and all(0.0 <= x <= 1.0 for x in r)
        summary = metrics["summary"]
        assert summary["E_r"] == pytest.approx(sum(r) / 2, abs=1e-6)
        assert summary["label"] == ("core" if summary["E_r"] >= 0.5 else "spurious")
        assert [s["seed"] for s in metrics["segmented"]] == metrics["sample_seeds"]
        assert len(set(metrics["sample_seeds"])) == 2  # a fresh z per sample
        for name in ("samples.png", "overlays.png", "loss.png", "sample_00.png", "overlay_01.png",
                     "prompt.safetensors"):
            assert (item / name).is_file(), name
        assert all(summary[f"seconds_{s}"] >= 0 for s in ("optimise", "sample", "segment"))
    table = list(csv.DictReader((run_dir / "tench" / "table.csv").open()))
    assert [int(row["feature"]) for row in table] == [3, 5] and {"E_r", "label", "r_0", "r_1"} <= set(table[0])
    assert (run_dir / "tench" / "grid.png").is_file()
    agreement = {(row["group"], row["value"]): row for row in csv.DictReader((run_dir / "agreement.csv").open())}
    expected = sum(row["label"] == annotated for row, annotated in zip(table, ["core", "spurious"]))
    assert int(agreement[("all", "all")]["agree"]) == expected and agreement[("bias", "medium")]["features"] == "2"
    assert ("animacy", "animate") in agreement
    # One annotated class: no class to hold out, so the cross-validated δ row says why instead of a number.
    cv = agreement[("all, delta cross-validated", "needs results for >= 2 annotated classes")]
    assert cv["agreement"] == "" and agreement[("all", "all")]["delta"] == "0.5"
    by_delta = list(csv.DictReader((run_dir / "agreement_by_delta.csv").open()))
    assert len(by_delta) == 21 and all("not a result" in row["note"] for row in by_delta)

    # Resume: an interrupted run (no status.json) with one more feature redoes only the new item.
    finished = run_dir / "tench" / "feature_3" / "samples.png"
    before = finished.stat().st_mtime_ns
    (run_dir / "status.json").unlink()
    proc = digin(workdir, *common, "task.features=[3,5,7]")
    assert proc.returncode == 0, proc.stderr
    assert finished.stat().st_mtime_ns == before
    assert (run_dir / "tench" / "feature_7" / "metrics.json").is_file()
    rows = list(csv.DictReader((run_dir / "summary.csv").open()))
    assert [row["status"] for row in rows] == ["done before", "done before", "ok"]
    assert [int(row["feature"]) for row in csv.DictReader((run_dir / "tench" / "table.csv").open())] == [3, 5, 7]


@pytest.mark.parametrize("case,args,needles", [
    ("class", ["task.classes=[tenchh]", "task.features=[1]"], ["tenchh", "tench"]),
    ("feature", ["task.classes=[tench]", "task.features=[64]"], ["feature 64 is out of range", "0..63"]),
    ("delta", ["task.classes=[tench]", "task.features=[1]", "task.delta=1.5"], ["task.delta", "[0, 1]"]),
    ("folds", ["task.classes=[tench]", "task.features=[1]", "task.cv_folds=1"], ["task.cv_folds", ">= 2"]),
    ("segmenter", ["task.classes=[tench]", "task.features=[1]", "segmentation=tiny_sam"],
     ["segmentation=tiny_sam", "segmentation=grounded_sam"]),
])
def test_bad_task_inputs(monkeypatch, capsys, workdir, case, args, needles):
    one_line_error(digin_inprocess(monkeypatch, capsys, workdir, *args, output=f"bad_{case}"), *needles)
    assert no_items(workdir, f"bad_{case}")


@pytest.mark.parametrize("case,content,needles", [
    ("missing", None, ["does not exist"]),
    ("columns", "class,feature\ntench,1\n", ["lacks the column(s) label"]),
    ("labels", "class,feature,label\ntench,1,maybe\n", ["line 2", "unknown label 'maybe'", "core or spurious"]),
])
def test_bad_annotation_files(monkeypatch, capsys, workdir, case, content, needles):
    path = workdir / f"ann_{case}.csv"
    if content is not None:
        path.write_text(content)
    result = digin_inprocess(monkeypatch, capsys, workdir, f"task.annotations={path}", output=f"ann_{case}")
    one_line_error(result, str(path), *needles)
    assert no_items(workdir, f"ann_{case}")


@pytest.mark.parametrize("case,args,needles", [
    ("dino", ["segmentation=grounded_sam"], ["IDEA-Research/grounding-dino-base", "HF_HUB_OFFLINE",
                                             "segmentation.detector="]),
    ("sam", ["segmentation=grounded_sam", "segmentation.detector=DINO"], ["syscv-community/sam-hq-vit-huge",
                                                                          "HF_HUB_OFFLINE", "segmentation.pretrained="]),
])
def test_segmentation_weights_missing_offline(monkeypatch, capsys, workdir, tmp_path, case, args, needles):
    if case == "sam":  # a loadable local GroundingDINO, so that SAM is what is missing
        from digin_cli.segmentation.grounding import tiny_grounding_dino

        model, processor = tiny_grounding_dino()
        model.save_pretrained(tmp_path / "dino")
        processor.save_pretrained(tmp_path / "dino")
        args = [a.replace("DINO", str(tmp_path / "dino")) for a in args]
    # An empty Hugging Face cache: nothing is found offline (HF_HUB_OFFLINE=1 from conftest keeps the hub away).
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    result = digin_inprocess(monkeypatch, capsys, workdir, "task.classes=[tench]", "task.features=[1]", *args,
                             output=f"weights_{case}")
    one_line_error(result, *needles)
    assert no_items(workdir, f"weights_{case}")


def test_features_default_to_the_class_ranking(monkeypatch, capsys, workdir):
    from PIL import Image

    from digin_cli.classifiers.tiny import TinyClassifier
    from digin_cli.features import class_feature_ranking, extract_features

    train = workdir / "train"
    for i in range(1000):  # ImageNet layout: one folder per class, sorted position = label
        (train / f"n{i:08d}").mkdir(parents=True, exist_ok=True)
    files = []
    for k, colour in enumerate([(200, 30, 30), (30, 200, 30), (30, 30, 200)]):
        files.append(train / "n00000000" / f"{k}.png")
        Image.new("RGB", (80, 70), colour).save(files[-1])
    f = TinyClassifier(seed=0)  # classifier=tiny_a
    expected = [r["feature"] for r in class_feature_ranking(extract_features(f, files, 64), f.head()[0], 0, 2)]

    result = digin_inprocess(monkeypatch, capsys, workdir, "task.classes=[tench]", "task.top_k=2",
                             f"paths.imagenet_train={train}", "optimizer.steps=1", "task.num_samples=1",
                             f"hydra.run.dir={workdir / 'ranked'}", output="ranked")
    assert result[0] in (0, None), result[2]
    table = list(csv.DictReader((workdir / "ranked" / "tench" / "table.csv").open()))
    assert [(int(r["rank"]), int(r["feature"])) for r in table] == [(1, expected[0]), (2, expected[1])]
    assert list((workdir / "cache" / "features").glob("*.safetensors")), "class features are cached on disk"
    ranking = list(csv.DictReader((workdir / "ranked" / "tench" / "ranking.csv").open()))
    assert [int(r["feature"]) for r in ranking] == expected


def test_ranking_without_training_images(monkeypatch, capsys, workdir):
    result = digin_inprocess(monkeypatch, capsys, workdir, "task.classes=[tench]", output="no_train")
    one_line_error(result, "paths.imagenet_train")
    assert no_items(workdir, "no_train")


@pytest.mark.parametrize("args,needles", [
    ([], ["classifier.checkpoint="]),
    (["classifier=tiny_a"], ["IDEA-Research/grounding-dino-base", "HF_HUB_OFFLINE", "segmentation.detector="]),
])
def test_agreement_reproduction_fails_fast_without_weights(monkeypatch, capsys, workdir, tmp_path, args, needles):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    result = digin_inprocess(monkeypatch, capsys, workdir, "experiment=spurious_salient", "device=cpu",
                             f"task.annotations={workdir / 'annotations.csv'}", *args,
                             output=f"paper{len(args)}", base=[])  # own folder: one process, one run uid
    one_line_error(result, *needles)
    assert no_items(workdir, "paper")
