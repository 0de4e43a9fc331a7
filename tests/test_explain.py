"""task=explain and task=hard_prompt end to end on tiny components through the CLI, and their bad inputs."""

import json
import os
import subprocess
import sys

import pytest
from safetensors import safe_open

pytestmark = pytest.mark.slow

DIGIN = [sys.executable, "-m", "digin_cli.cli"]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("explain")


def digin(workdir, task, *args, output="out"):
    base = [f"task={task}", "generator=tiny_lcm", "classifier=tiny_a", "device=cpu", "optimizer.steps=2",
            "task.num_samples=2", f"paths.output_root={workdir / output}", f"paths.cache_dir={workdir / 'cache'}"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    return subprocess.run([*DIGIN, *base, *args], capture_output=True, text=True, env=env, timeout=600)


def one_line_error(proc, *needles):
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr + proc.stdout
    errors = [line for line in proc.stderr.splitlines() if line.startswith("digin: error:")]
    assert len(errors) == 1, proc.stderr
    for needle in needles:
        assert needle in errors[0], errors[0]


def test_explain_eq5_writes_embeddings_samples_and_curves(workdir):
    proc = digin(workdir, "explain", "task.classes=[bee]", "task.features=[3]", "task.prefix=a texture of",
                 "task.num_tokens=2", output="soft")
    assert proc.returncode == 0, proc.stderr
    (item,) = (workdir / "soft").glob("explain/runs/*/bee/feature_3/seed_0")
    metrics = json.loads((item / "metrics.json").read_text())
    assert [i["index"] for i in metrics["iterates"]] == [0, 1, 2]
    assert {"ce", "phi", "p_class", "train_loss"} <= set(metrics["iterates"][0])
    assert metrics["selected_iterate"] == 2 and len(metrics["samples"]) == 2
    assert len(metrics["nearest_tokens"]) == 2 and all(len(n) == 5 for n in metrics["nearest_tokens"])
    with safe_open(str(item / "prompt.safetensors"), "pt") as f:
        assert f.get_tensor("token_embeddings").shape[0] == 2
        assert f.metadata()["prefix"] == "a texture of"
    for name in ("samples.png", "loss.png", "iterates.png"):
        assert (item / name).stat().st_size > 0
    from digin_cli.tasks.explain import KEY_IMAGES
    assert all((item / name).exists() for name in KEY_IMAGES)


def test_hard_prompt_writes_a_decodable_text_explanation(workdir):
    proc = digin(workdir, "hard_prompt", "task.classes=[bee]", output="hard")
    assert proc.returncode == 0, proc.stderr
    (item,) = (workdir / "hard").glob("hard_prompt/runs/*/bee/seed_0")
    text = (item / "explanation.txt").read_text().strip()
    assert text.startswith("a picture of ") and len(text.split()) >= 4
    assert json.loads((item / "metrics.json").read_text())["text"] == text


@pytest.mark.parametrize("args,needles", [
    (["task.classes=[bees]"], ["bees", "bee"]),
    (["task.classes=[bee]", "task.features=[100000]"], ["100000", "out of range"]),
    (["generator.lora=latent-consistency/lcm-lora-sdv1-5"], ["generator.lora=", "HF_HUB_OFFLINE"]),
    (["task.prefix=" + "word " * 70, "task.num_tokens=10"], ["exceed", "75"]),
    (["task.prefix=' '"], ["tokenizes to nothing"]),
    (["task.init=' '"], ["tokenizes to nothing"]),
])
def test_bad_inputs_fail_with_one_line_and_write_no_item(workdir, args, needles):
    output = f"bad_{abs(hash(tuple(args))) % 10**8}"
    proc = digin(workdir, "explain", *args, output=output)
    one_line_error(proc, *needles)
    assert not list((workdir / output).glob("explain/runs/*/*/*/metrics.json"))
    assert not list((workdir / output).glob("explain/runs/*/**/*.png"))


@pytest.mark.parametrize("args,needles", [
    (["experiment=explain_fig3"], ["classifier.checkpoint="]),
    (["experiment=explain_fig8", "classifier=tiny_a"], ["generator.pretrained=", "HF_HUB_OFFLINE"]),
])
def test_paper_reproductions_fail_fast_without_weights(tmp_path, args, needles):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([*DIGIN, *args, "device=cpu", f"paths.output_root={tmp_path}"], capture_output=True,
                          text=True, env=env, timeout=300)
    one_line_error(proc, *needles)
