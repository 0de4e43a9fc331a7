"""End to end through the `digin` console script: the demo, sweeps, and every bad input the foundation handles."""

import csv
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.cli_helpers import DIGIN, ENV, one_line_error, run_digin

pytestmark = pytest.mark.slow

FAST = ["experiment=demo", "optimizer.steps=2", "optimizer.augment.num=2", "generator.num_steps=3",
        "task.classes=[goldfish]"]


def digin(*args, env=None, cwd=None):
    return run_digin(*args, env=env, cwd=cwd, timeout=300)


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
        item = run / "1_goldfish" / f"seed_{seed}"
        metrics = json.loads((item / "metrics.json").read_text())
        assert [i["index"] for i in metrics["iterates"]] == [0, 1, 2]
        assert {"p_f", "p_g", "loss"} <= set(metrics["iterates"][0])
        # The optimisation did something: the best iterate disagrees more than plain SD (iterate 0).
        best, first = metrics["iterates"][metrics["best_iterate"]], metrics["iterates"][0]
        assert best["p_f"] - best["p_g"] > first["p_f"] - first["p_g"], metrics["iterates"]
        assert metrics["peak_memory_mb"] > 0 and metrics["seconds"] > 0
        for name in ("init.png", "best.png", "iterates.png"):
            assert (item / name).stat().st_size > 0
    summary = (run / "summary.csv").read_text().splitlines()
    assert len(summary) == 3 and "p_f_best" in summary[0]
    assert "classifier disagreement" in proc.stdout  # the end-of-run table


def _numbers(metrics: dict) -> dict:
    """metrics.json without what legitimately differs between runs (time, memory, the job's class list)."""
    drop = {"seconds", "peak_memory_mb", "config_hash"}
    return {k: ({kk: vv for kk, vv in v.items() if kk not in drop} if isinstance(v, dict) else v)
            for k, v in metrics.items() if k not in drop}


def test_an_item_gives_identical_results_alone_or_after_another_item(tmp_path):
    """Cutouts and noise are seeded per item: [goldfish, red fox] in one job, then [red fox] alone."""
    both = digin(*FAST[:-1], "task.classes=[goldfish,red fox]", f"paths.output_root={tmp_path / 'both'}")
    alone = digin(*FAST[:-1], "task.classes=[red fox]", f"paths.output_root={tmp_path / 'alone'}")
    assert both.returncode == 0 and alone.returncode == 0, both.stderr + alone.stderr
    a, b = (next((tmp_path / r).glob("*/runs/*")) for r in ("both", "alone"))
    item_a, item_b = (run / "277_red_fox" / "seed_0" for run in (a, b))
    m_a, m_b = (json.loads((i / "metrics.json").read_text()) for i in (item_a, item_b))
    assert _numbers(m_a) == _numbers(m_b)
    assert (item_a / "best.png").read_bytes() == (item_b / "best.png").read_bytes()
    assert (item_a / "iterates.png").read_bytes() == (item_b / "iterates.png").read_bytes()


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
    best = sweep / "0" / "1_goldfish" / "seed_0" / "best.png"
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
    assert (sweep / "0" / "1_goldfish" / "seed_0" / "metrics.json").exists()
    assert "failed" in (sweep / "sweep_status.csv").read_text()


def test_unknown_class_suggests_close_matches_and_writes_no_item(tmp_path):
    proc = digin(*FAST[:-1], "task.classes=[red fx]", f"paths.output_root={tmp_path}")
    one_line_error(proc, "red fx", "red fox")
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
    ("optimizer.steps=abc", ["optimizer.steps must be an integer >= 0", "'abc'"]),
    ("task.seeds=[a]", ["task.seeds must be a list of integers", "'a'"]),
    ("optimizer.lr=0", ["optimizer.lr must be a number > 0"]),
    ("optimizer.lr=-0.5", ["optimizer.lr must be a number > 0", "-0.5"]),
    ("hydra.run.dir=/proc/x", ["cannot write to hydra.run.dir '/proc/x'", "hydra.run.dir=/a/writable/folder"]),
    ("task.shard_index=2", ["task.shard_index must be below task.num_shards (1)"]),
    ("optimizer.checkpointing=maybe", ["optimizer.checkpointing", "auto"]),
    ("optimizer.compile=inductr", ["optimizer.compile must be true, false or a torch.compile backend", "inductr"]),
    ("optimizer.augment.chunk=0", ["optimizer.augment.chunk"]),
])
def test_bad_overrides_fail_before_any_output(tmp_path, override, needles):
    proc = digin(*FAST, override, f"paths.output_root={tmp_path}")
    one_line_error(proc, *needles)
    assert not list(tmp_path.glob("*/runs/*"))


@pytest.mark.parametrize("overrides,needles", [
    (["+classifier.bogus=1"], ["classifier 'tiny_a' has no option bogus", "+classifier.bogus", "input_size"]),
    (["classifier=resnet50", "+classifier.bogus=1"], ["classifier 'resnet50' has no option bogus", "checkpoint"]),
    (["classifier=clip_vit_b16_zeroshot", "+classifier.bogus=1"], ["'clip_vit_b16_zeroshot' has no option bogus"]),
    (["+classifier2.bogus=1"], ["classifier2 'tiny_b' has no option bogus", "+classifier2.bogus"]),
    (["classifier=convnext_b", "classifier.grad_checkpointing=maybe"],
     ["classifier.grad_checkpointing must be one of true, false, auto, got maybe"]),
])
def test_bad_classifier_options_give_one_line(tmp_path, overrides, needles):
    proc = digin(*FAST, *overrides, f"paths.output_root={tmp_path}")
    one_line_error(proc, *needles)
    assert not list(tmp_path.rglob("*")), "the pre-flight refuses it: no run folder, no model loaded"


@pytest.mark.parametrize("override,needles", [
    ("task.clases=[koala]", ["Could not override 'task.clases'", "did you mean task.classes"]),
    ("optimizer.lrr=0.1", ["Could not override 'optimizer.lrr'", "did you mean optimizer.lr?"]),
    ("tsk.classes=[koala]", ["did you mean task.classes?"]),
])
def test_a_mistyped_key_suggests_the_close_key_of_the_composed_config(tmp_path, override, needles):
    proc = digin(*FAST, override, f"paths.output_root={tmp_path}")
    one_line_error(proc, *needles)
    assert not list(tmp_path.rglob("*"))


def test_a_bad_value_anywhere_in_a_sweep_fails_before_any_job(tmp_path):
    proc = digin("-m", *FAST, "optimizer.lr=0.1,-1", f"paths.output_root={tmp_path}")
    one_line_error(proc, "optimizer.lr", "-1")
    assert not list(tmp_path.rglob("status.json"))


def test_unwritable_sweep_folder_fails_in_the_preflight(tmp_path):
    proc = digin("-m", *FAST, "seed=0,1", f"paths.output_root={tmp_path}", "hydra.sweep.dir=/proc/x/sweep")
    one_line_error(proc, "hydra.sweep.dir", "/proc/x/sweep")
    assert not list(tmp_path.rglob("status.json"))


def _csv(path: Path) -> list[dict]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def test_both_missile_classes_get_their_own_folder(tmp_path):
    # ImageNet has two classes named "missile" (657, 744): by index both run, neither is "done before".
    proc = digin(*FAST[:-1], "task.classes=[657,744]", "optimizer.steps=0", f"paths.output_root={tmp_path}")
    assert proc.returncode == 0, proc.stderr
    run = only_run_dir(tmp_path)
    for folder in ("657_missile", "744_missile"):
        assert json.loads((run / folder / "seed_0" / "metrics.json").read_text())["class_index"] == int(folder[:3])
    assert [r["status"] for r in _csv(run / "summary.csv")] == ["ok", "ok"]


def test_a_changed_config_under_the_same_sweep_dir_is_refused_and_the_old_results_kept(tmp_path):
    sweep = tmp_path / "sweep"
    base = ["-m", *FAST, "seed=0", f"paths.output_root={tmp_path}", f"hydra.sweep.dir={sweep}"]
    first = digin(*base, "optimizer.steps=1")
    assert first.returncode == 0, first.stderr
    metrics = sweep / "0" / "1_goldfish" / "seed_0" / "metrics.json"
    before = metrics.read_bytes()
    changed = digin(*base, "optimizer.steps=2")
    assert changed.returncode == 1
    assert "Traceback" not in changed.stderr
    refusal = [line for line in changed.stderr.splitlines() if "different configuration" in line]
    assert len(refusal) == 1 and "hydra.sweep.dir=" in refusal[0], changed.stderr
    assert metrics.read_bytes() == before and len(json.loads(before)["iterates"]) == 2  # old results untouched
    assert json.loads((sweep / "0" / "status.json").read_text())["status"] == "ok"
    assert _csv(sweep / "sweep_status.csv")[0]["status"] == "refused"
    again = digin(*base, "optimizer.steps=1")  # the folder's own config still resumes (nothing to do)
    assert again.returncode == 0 and "already completed" in again.stderr


def test_more_seeds_in_the_same_run_folder_run_only_the_new_items(tmp_path):
    run = tmp_path / "run"
    base = [*FAST, "optimizer.steps=1", f"paths.output_root={tmp_path}", f"hydra.run.dir={run}"]
    assert digin(*base, "task.seeds=[0]").returncode == 0
    first = (run / "1_goldfish" / "seed_0" / "metrics.json").read_bytes()
    more = digin(*base, "task.seeds=[0,1]")  # task.meta.item_keys: seeds only choose items, so this is no other config
    assert more.returncode == 0, more.stderr
    assert (run / "1_goldfish" / "seed_0" / "metrics.json").read_bytes() == first
    assert [r["status"] for r in _csv(run / "summary.csv")] == ["done before", "ok"]


def test_a_killed_sweep_job_is_incomplete_and_a_rerun_completes_it_redoing_nothing(tmp_path):
    sweep = tmp_path / "sweep"
    args = ["-m", *FAST[:-1], "optimizer.steps=1", "task.classes=[goldfish,red fox]", "seed=0", "hydra/launcher=local",
            f"paths.output_root={tmp_path}", f"hydra.sweep.dir={sweep}"]
    env = {**os.environ, **ENV}
    proc = subprocess.Popen([*DIGIN, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    victim, deadline = None, time.time() + 280
    while victim is None and time.time() < deadline and proc.poll() is None:
        for status_file in sweep.glob("*/status.json"):
            status = json.loads(status_file.read_text())
            first_item = status_file.parent / "1_goldfish" / "seed_0" / "metrics.json"
            if status["status"] == "running" and first_item.exists():
                victim = status_file.parent, status["pid"]  # done with goldfish, in the middle of red fox
                break
        time.sleep(0.05)
    assert victim is not None, "no job was caught between its two items"
    os.kill(victim[1], signal.SIGKILL)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 1 and "Traceback" not in err, err
    assert "incomplete" in err
    jobs = {r["job"]: r["status"] for r in _csv(sweep / "sweep_status.csv")}
    assert jobs[victim[0].name] == "incomplete"
    finished = victim[0] / "1_goldfish" / "seed_0" / "metrics.json"
    stamps = {p: p.stat().st_mtime_ns for p in sweep.glob("*/*/seed_0/metrics.json")}
    assert finished in stamps and not (victim[0] / "277_red_fox" / "seed_0" / "metrics.json").exists()

    again = digin(*args)
    assert again.returncode == 0, again.stderr
    assert all(p.stat().st_mtime_ns == t for p, t in stamps.items())  # nothing finished was redone
    assert {r["status"] for r in _csv(sweep / "sweep_status.csv")} == {"ok"}
    rows = _csv(victim[0] / "summary.csv")
    assert [(r["class"], r["status"]) for r in rows] == [("goldfish", "done before"), ("red fox", "ok")]
    merged = _csv(sweep / "summary.csv")  # the sweep's table: every item, nothing lost
    assert sorted((r["job"], r["class"]) for r in merged) == [("0", "goldfish"), ("0", "red fox")]


def test_sharded_sweep_splits_the_items_and_their_union_is_the_unsharded_run(tmp_path):
    common = [*FAST[:-1], "task.classes=[goldfish,red fox,tench]", "optimizer.steps=0"]  # item split, not optimisation
    one = digin(*common, f"paths.output_root={tmp_path / 'one'}")
    assert one.returncode == 0, one.stderr
    sweep = tmp_path / "sweep"
    sharded = digin("-m", *common, "task.shard_index=range(2)", "task.num_shards=2", "hydra/launcher=local",
                    f"paths.output_root={tmp_path / 'sharded'}", f"hydra.sweep.dir={sweep}")
    assert sharded.returncode == 0, sharded.stderr
    run = only_run_dir(tmp_path / "one")
    whole = {p.parent.relative_to(run) for p in run.glob("*/seed_0/metrics.json")}
    shards = [{p.parent.relative_to(sweep / j) for p in (sweep / j).glob("*/seed_0/metrics.json")} for j in "01"]
    assert len(whole) == 3 and not shards[0] & shards[1] and shards[0] | shards[1] == whole
    assert {len(s) for s in shards} == {1, 2}
    for j, items in zip("01", shards):  # a shard's item is the unsharded item, byte for byte
        for item in items:
            assert (sweep / j / item / "best.png").read_bytes() == (run / item / "best.png").read_bytes()
    merged = _csv(sweep / "summary.csv")
    assert sorted(r["class"] for r in merged) == ["goldfish", "red fox", "tench"]
    assert {r["job"] for r in merged} == {"0", "1"}


def test_unwritable_output_folder(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        if os.access(locked, os.W_OK):
            pytest.skip("running as a user who can write anywhere (root)")
        proc = digin(*FAST, f"paths.output_root={locked}/out")
        one_line_error(proc, "paths.output_root")
    finally:
        locked.chmod(0o700)


def test_output_root_that_is_a_file(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    proc = digin(*FAST, f"paths.output_root={blocker}")
    one_line_error(proc, "paths.output_root")


def test_cuda_requested_without_cuda(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    proc = digin(*FAST, "device=cuda", f"paths.output_root={tmp_path}")
    one_line_error(proc, "device=cuda", "device=cpu")
    assert json.loads((only_run_dir(tmp_path) / "status.json").read_text())["status"] == "failed"


def test_missing_weights_offline_names_model_and_fix(tmp_path):
    proc = digin("task=sample", "generator=sd15", "device=cpu", f"paths.output_root={tmp_path}",
                 env={"HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1"})
    one_line_error(proc, "stable-diffusion-v1-5/stable-diffusion-v1-5", "HF_HUB_OFFLINE",
                          "generator.pretrained=")
