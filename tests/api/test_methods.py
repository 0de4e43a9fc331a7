"""The method classes: they optimise (and do nothing at lr 0), write nothing until ``save``, and one item through the
API gives the same image bytes and metrics as the same item through ``digin`` (the tasks run over these classes)."""

from __future__ import annotations

import json

import pytest
import torch

from digin_cli.augment import Cutouts
from digin_cli.device import item_seed, seed_everything
from digin_cli.errors import DiginError
from digin_cli.optimize import OptimSettings

TINY_CLI = ["generator=tiny", "classifier=tiny_a", "classifier2=tiny_b", "device=cpu", "generator.num_steps=3",
            "optimizer.augment.num=2", "optimizer.steps=2"]


def cli_rng(key: str, seed: int = 0) -> torch.Generator:
    """The random source ``run_items`` gives the item ``key`` (its path in the run folder) of a run with ``seed``."""
    s = item_seed(seed, key)
    seed_everything(s)
    return torch.Generator().manual_seed(s)


def test_disagreement_moves_p_f_minus_p_g_and_writes_nothing_until_saved(api, tiny, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    gen, f, g = tiny
    result = api.Disagreement(gen, f, g, settings=OptimSettings(steps=3, lr=0.1), cutouts=Cutouts(num=2)
                              ).generate("goldfish", seed=0)
    assert list(tmp_path.iterdir()) == []
    s = result.summary
    gain = lambda s: (s["p_f_best"] - s["p_g_best"]) - (s["p_f_init"] - s["p_g_init"])
    assert gain(s) > 1e-5, s  # measured 5.8e-5 on these random tiny classifiers (p ~ 1e-3)
    assert result.image.shape == (1, 3, 64, 64) and result.pil().size == (64, 64)
    assert [i.index for i in result.iterates] == [0, 1, 2, 3]
    frozen = api.Disagreement(gen, f, g, settings=OptimSettings(steps=3, lr=0.0), cutouts=Cutouts(num=2)
                              ).generate("goldfish", seed=0).summary
    assert abs(gain(frozen)) < 1e-8  # lr 0: nothing moves (but float noise)
    folder = result.save(tmp_path / "item")
    assert sorted(p.name for p in folder.iterdir()) == ["best.png", "init.png", "iterates.png", "metrics.json"]
    assert json.loads((folder / "metrics.json").read_text())["summary"] == json.loads(json.dumps(s))


def test_a_class_neither_classifier_knows_is_one_line(api, tiny):
    with pytest.raises(DiginError, match="koalaa"):
        api.Disagreement(*tiny).generate("koalaa")


@pytest.mark.slow
def test_disagreement_through_the_api_equals_the_cli(api, tiny, cli, same_item, tmp_path):
    run = tmp_path / "cli"
    proc = cli(*TINY_CLI, "optimizer.lr=0.1", "task.classes=[goldfish]", "task.seeds=[1]", f"hydra.run.dir={run}")
    assert proc.returncode == 0, proc.stderr
    gen, f, g = tiny
    method = api.Disagreement(gen, f, g, settings=OptimSettings(steps=2, lr=0.1), cutouts=Cutouts(num=2))
    result = method.generate("goldfish", seed=1, rng=cli_rng("1_goldfish/seed_1"))
    item = run / "1_goldfish" / "seed_1"
    same_item(item, result.save(tmp_path / "api"))


@pytest.mark.slow
def test_neuron_visualisation_through_the_api_equals_the_cli(api, tiny, cli, same_item, tmp_path):
    """Object choice (the higher mean phi of two objects for max, the lower for min) and the optimisation."""
    run = tmp_path / "cli"
    proc = cli(*TINY_CLI, "task=neuron", "task.neurons=[5]", "task.direction=both", "task.objects=[sand,water]",
               "task.object_samples=2", "task.top_images=0", "optimizer.lr=0.05", f"hydra.run.dir={run}")
    assert proc.returncode == 0, proc.stderr
    gen, f, _ = tiny
    method = api.NeuronVisualiser(gen, f, settings=OptimSettings(steps=2, lr=0.05), cutouts=Cutouts(num=2),
                                  object_samples=2)
    label = int(f.head()[0][:, 5].argmax())  # the CLI reports the class with the largest head weight on the neuron
    for direction in ("max", "min"):
        result = method.visualise(5, direction, objects=["sand", "water"], report_class=label,
                                  rng=cli_rng(f"neuron_5/{direction}/seed_0"))
        item = run / "neuron_5" / direction / "seed_0"
        same_item(item, result.save(tmp_path / "api" / direction))
    means = {r["object"]: r["mean_phi"] for r in result.details["objects"]}
    assert means == pytest.approx({r["object"]: float(r["mean_phi"]) for r in _csv(run / "neuron_5" / "objects.csv")})


def _csv(path):
    import csv

    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["explain", "hard_prompt"])
def test_prompt_explanations_through_the_api_equal_the_cli(api, cli, same_item, tmp_path, kind):
    run = tmp_path / "cli"
    words = ["task.vocabulary=[honey,wasp,flower]"] if kind == "hard_prompt" else ["task.features=[3]"]
    proc = cli(f"task={kind}", "generator=tiny_lcm", "classifier=tiny_a", "device=cpu", "optimizer.steps=2",
               "task.classes=[goldfish]", "task.num_samples=2", *words, f"hydra.run.dir={run}")
    assert proc.returncode == 0, proc.stderr
    gen, f = api.load_generator("tiny_lcm"), api.load_classifier("tiny_a")
    settings, _ = api.optimizer_settings("prompt" if kind == "explain" else "hard_prompt", steps=2)
    method = api.PromptExplainer(gen, f, settings=settings, text_settings=settings)
    if kind == "explain":
        cli_rng("goldfish/feature_3/seed_0")
        result = method.explain("goldfish", 3, seed=0, num_samples=2)
        item = run / "goldfish" / "feature_3" / "seed_0"
    else:
        cli_rng("goldfish/seed_0")
        result = method.explain_text("goldfish", seed=0, num_samples=2, vocabulary=["honey", "wasp", "flower"])
        item = run / "goldfish" / "seed_0"
        assert result.text == (item / "explanation.txt").read_text().strip()
    same_item(item, result.save(tmp_path / "api"), images=("samples.png", "loss.png", "iterates.png"))
    assert result.samples.shape == (2, 3, 64, 64)
