"""End to end through the `digin` console script: the demo, sweeps, and every bad input the foundation handles."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

DIGIN = [sys.executable, "-m", "digin_cli.cli"]
FAST = ["experiment=demo", "optimizer.steps=2", "optimizer.augment.num=2", "generator.num_steps=3",
        "task.classes=[goldfish]"]


def digin(*args, env=None, cwd=None):
    full_env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", **(env or {})}
    return subprocess.run([*DIGIN, *args], capture_output=True, text=True, env=full_env, cwd=cwd, timeout=300)


def assert_one_line_error(proc, *needles):
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr and "Traceback" not in proc.stdout
    errors = [line for line in proc.stderr.splitlines() if line.startswith("digin: error:")]
    assert len(errors) == 1, proc.stderr
    for needle in needles:
        assert needle in errors[0], errors[0]
    return errors[0]


def only_run_dir(root: Path) -> Path:
    runs = list(root.glob("*/runs/*"))
    assert len(runs) == 1, runs
    return runs[0]


def test_help_lists_groups_and_cfg_job_prints_config():
    proc = digin("--help")
    assert proc.returncode == 0
    for group in ("task", "generator", "classifier", "classifier2", "optimizer", "segmentation", "logger",
                  "experiment"):
        assert group in proc.stdout
    cfg = digin("--cfg", "job", "classifier2=tiny_b")
    assert cfg.returncode == 0
    assert "classifier2:" in cfg.stdout and "TinyClassifier" in cfg.stdout


def test_demo_disagreement_writes_every_output(tmp_path):
    proc = digin(*FAST, "task.seeds=[0,1]", f"paths.output_root={tmp_path}")
    assert proc.returncode == 0, proc.stderr
    run = only_run_dir(tmp_path)
    assert json.loads((run / "status.json").read_text())["status"] == "ok"
    assert "classifier2" in (run / "config.yaml").read_text()
    for seed in (0, 1):
        item = run / "goldfish" / f"seed_{seed}"
        metrics = json.loads((item / "metrics.json").read_text())
        assert [i["index"] for i in metrics["iterates"]] == [0, 1, 2]
        assert {"p_f", "p_g", "loss"} <= set(metrics["iterates"][0])
        assert metrics["peak_memory_mb"] > 0 and metrics["seconds"] > 0
        for name in ("init.png", "best.png", "iterates.png"):
            assert (item / name).stat().st_size > 0
    summary = (run / "summary.csv").read_text().splitlines()
    assert len(summary) == 3 and "p_f_best" in summary[0]
    assert "classifier disagreement" in proc.stdout  # the end-of-run table


def test_sample_task_names_files_by_prompt_and_seed_and_logs_to_wandb(tmp_path):
    proc = digin("task=sample", "generator=tiny", "device=cpu", "task.prompts=[a red fox,a koala]",
                 "task.seeds=[3]", f"paths.output_root={tmp_path}", "logger=offline",
                 env={"WANDB_MODE": "offline", "WANDB_SILENT": "true"})
    assert proc.returncode == 0, proc.stderr
    run = only_run_dir(tmp_path)
    assert list((run / "wandb").glob("offline-run-*")), "the job's W&B run is written under its output folder"
    from PIL import Image

    for name in ("a_red_fox__seed3.png", "a_koala__seed3.png"):
        assert Image.open(run / name).size == (64, 64)


def test_multirun_jobs_get_own_folders_and_are_never_redone(tmp_path):
    sweep = tmp_path / "sweep"
    args = ["-m", *FAST, "seed=0,1", f"paths.output_root={tmp_path}", f"hydra.sweep.dir={sweep}"]
    first = digin(*args)
    assert first.returncode == 0, first.stderr
    statuses = [json.loads((sweep / str(j) / "status.json").read_text()) for j in (0, 1)]
    assert [s["status"] for s in statuses] == ["ok", "ok"]
    assert (sweep / "sweep_status.csv").exists()
    best = sweep / "0" / "goldfish" / "seed_0" / "best.png"
    before = best.stat().st_mtime_ns
    again = digin(*args)
    assert again.returncode == 0
    assert "already completed" in again.stderr
    assert best.stat().st_mtime_ns == before


def test_a_failing_sweep_job_is_recorded_the_others_run_and_the_exit_code_says_so(tmp_path):
    sweep = tmp_path / "sweep"
    proc = digin("-m", *FAST[:-1], "task.classes=[goldfish],[red fx]", f"paths.output_root={tmp_path}",
                 f"hydra.sweep.dir={sweep}")
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    statuses = {j: json.loads((sweep / j / "status.json").read_text())["status"] for j in ("0", "1")}
    assert statuses == {"0": "ok", "1": "failed"}
    assert (sweep / "0" / "goldfish" / "seed_0" / "metrics.json").exists()
    assert "failed" in (sweep / "sweep_status.csv").read_text()


def test_unknown_class_suggests_close_matches_and_writes_no_item(tmp_path):
    proc = digin(*FAST[:-1], "task.classes=[red fx]", f"paths.output_root={tmp_path}")
    assert_one_line_error(proc, "red fx", "red fox")
    run = only_run_dir(tmp_path)
    status = json.loads((run / "status.json").read_text())
    assert status["status"] == "failed" and "red fox" in status["error"]
    assert not list(run.glob("*/seed_*"))
    assert not (run / "summary.csv").exists()


@pytest.mark.parametrize("override,needles", [
    ("classifier=convnxt_b", ["unknown classifier 'convnxt_b'", "convnext_b"]),
    ("classifier2=tiny_c", ["unknown classifier2 'tiny_c'", "tiny_a"]),
    ("generator=sd16", ["unknown generator 'sd16'", "sd15"]),
    ("task=disagrement", ["unknown task", "disagreement"]),
    ("generator.num_steps=0", ["generator.num_steps", "positive"]),
    ("optimizer.steps=-1", ["optimizer.steps"]),
    ("optimizer.checkpointing=maybe", ["optimizer.checkpointing", "auto"]),
    ("optimizer.augment.chunk=0", ["optimizer.augment.chunk"]),
])
def test_bad_overrides_fail_before_any_output(tmp_path, override, needles):
    proc = digin(*FAST, override, f"paths.output_root={tmp_path}")
    assert_one_line_error(proc, *needles)
    assert not list(tmp_path.glob("*/runs/*"))


def test_unwritable_output_folder(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        if os.access(locked, os.W_OK):
            pytest.skip("running as a user who can write anywhere (root)")
        proc = digin(*FAST, f"paths.output_root={locked}/out")
        assert_one_line_error(proc, "paths.output_root")
    finally:
        locked.chmod(0o700)


def test_output_root_that_is_a_file(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    proc = digin(*FAST, f"paths.output_root={blocker}")
    assert_one_line_error(proc, "paths.output_root")


def test_cuda_requested_without_cuda(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    proc = digin(*FAST, "device=cuda", f"paths.output_root={tmp_path}")
    assert_one_line_error(proc, "device=cuda", "device=cpu")
    assert json.loads((only_run_dir(tmp_path) / "status.json").read_text())["status"] == "failed"


def test_missing_weights_offline_names_model_and_fix(tmp_path):
    proc = digin("task=sample", "generator=sd15", "device=cpu", f"paths.output_root={tmp_path}",
                 env={"HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1"})
    assert_one_line_error(proc, "stable-diffusion-v1-5/stable-diffusion-v1-5", "HF_HUB_OFFLINE",
                          "generator.pretrained=")
