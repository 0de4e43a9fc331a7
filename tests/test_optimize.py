"""The shared DiG-IN loop on tiny components: it moves the objective and keeps its invariants."""

import math

import pytest
import torch

from digin_cli.augment import Cutouts
from digin_cli.classifiers.tiny import TinyClassifier
from digin_cli.generation.sampler import DDIMSampler
from digin_cli.objectives import Disagreement
from digin_cli.optimize import DiginOptimizer, OptimSettings, linear_weights


@pytest.fixture(scope="module")
def setup(tiny_sd):
    f, g = TinyClassifier(seed=1), TinyClassifier(seed=2)
    cond, null = tiny_sd.encode_prompt("a photograph of a goldfish"), tiny_sd.null_embedding()
    return tiny_sd, f, g, cond, null


def test_linear_weights_match_authors_schedule():
    assert linear_weights(3) == pytest.approx([1 / 6, 2 / 6, 3 / 6])
    assert linear_weights(1) == [1.0]


def test_optimisation_lowers_the_disagreement_objective(setup):
    sd, f, g, cond, null = setup
    torch.manual_seed(0)
    objective = Disagreement(f, g, target=1, cutouts=Cutouts(4, 0.3, 0.005))
    result = DiginOptimizer(DDIMSampler(sd), OptimSettings(steps=6, lr=0.05)).run(
        sd.initial_latent(0), cond, null, objective)
    losses = [i.loss for i in result.iterates]
    assert len(losses) == 7
    # Random tiny classifiers over 1000 classes give small probabilities: ask for a clear relative decrease.
    assert result.initial.loss - result.best.loss > 0.05 * abs(result.initial.loss), losses
    assert losses[-1] < losses[0]
    assert result.best.metrics["p_f"] - result.best.metrics["p_g"] > result.initial.metrics["p_f"] - \
        result.initial.metrics["p_g"]
    assert result.error is None
    assert result.best_index == min(range(7), key=lambda i: losses[i])


def test_iterate_zero_is_the_plain_sd_image_and_z_norm_is_kept(setup):
    sd, f, g, cond, null = setup
    sampler = DDIMSampler(sd)
    z_T = sd.initial_latent(4)
    with torch.no_grad():
        plain = sampler.decode(sampler.sample(z_T, cond, null).latents)
    objective = Disagreement(f, g, target=1, cutouts=Cutouts(2))
    result = DiginOptimizer(sampler, OptimSettings(steps=2, lr=0.05, latent_lr_factor=1.0)).run(
        z_T, cond, null, objective)
    assert torch.allclose(result.initial.image, plain, atol=1e-6)
    assert not torch.allclose(result.iterates[-1].image, plain, atol=1e-4)  # the inputs did move
    if result.best_index > 0:
        assert result.inputs["z_T"].norm().item() == pytest.approx(z_T.norm().item(), rel=1e-5)


def test_non_finite_loss_stops_and_keeps_best(setup):
    sd, f, g, cond, null = setup
    calls = {"n": 0}

    def objective(images, augment, latents=None):
        calls["n"] += 1
        value = images.mean()
        if not augment and calls["n"] > 3:
            value = value * float("nan")
        return value, {"loss": value.item()}

    result = DiginOptimizer(DDIMSampler(sd), OptimSettings(steps=5)).run(sd.initial_latent(0), cond, null, objective)
    assert result.error and "non-finite" in result.error
    assert len(result.iterates) < 6
    assert math.isfinite(result.best.loss)


def test_only_selected_variables_move(setup):
    sd, f, g, cond, null = setup
    objective = Disagreement(f, g, target=1, cutouts=Cutouts(2))
    settings = OptimSettings(steps=1, lr=0.1, optimize_latent=False, optimize_uncond=False)
    result = DiginOptimizer(DDIMSampler(sd), settings).run(sd.initial_latent(0), cond, null, objective)
    if result.best_index == 1:
        assert torch.equal(result.inputs["z_T"], sd.initial_latent(0))
        assert torch.equal(result.inputs["uncond"], null.expand_as(result.inputs["uncond"]))
        assert not torch.equal(result.inputs["cond"], cond.expand_as(result.inputs["cond"]))
