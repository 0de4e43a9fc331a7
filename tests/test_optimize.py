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


class LastIterateWins:
    """Trains on ``objective`` but scores each evaluated iterate lower than the one before, so the best iterate
    is always the last: tests about the optimised inputs then never depend on whether a random model improved."""

    def __init__(self, objective):
        self.objective, self.calls = objective, 0

    def __call__(self, images, augment=False, latents=None):
        loss, metrics = self.objective(images, augment, latents)
        if augment:
            return loss, metrics
        self.calls += 1
        return loss.new_tensor(-float(self.calls)), metrics


def test_iterate_zero_is_the_plain_sd_image_and_z_norm_is_kept(setup):
    sd, f, g, cond, null = setup
    sampler = DDIMSampler(sd)
    z_T = sd.initial_latent(4)
    with torch.no_grad():
        plain = sampler.decode(sampler.sample(z_T, cond, null).latents)
    objective = LastIterateWins(Disagreement(f, g, target=1, cutouts=Cutouts(2)))
    result = DiginOptimizer(sampler, OptimSettings(steps=2, lr=0.05, latent_lr_factor=1.0)).run(
        z_T, cond, null, objective)
    assert torch.allclose(result.initial.image, plain, atol=1e-6)
    assert not torch.allclose(result.iterates[-1].image, plain, atol=1e-4)  # the inputs did move
    assert result.best_index == 2
    assert not torch.allclose(result.inputs["z_T"], z_T, atol=1e-4)  # z_T itself moved ...
    assert result.inputs["z_T"].norm().item() == pytest.approx(z_T.norm().item(), rel=1e-5)  # ... on its sphere


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
    objective = LastIterateWins(Disagreement(f, g, target=1, cutouts=Cutouts(2)))
    settings = OptimSettings(steps=1, lr=0.1, optimize_latent=False, optimize_uncond=False)
    result = DiginOptimizer(DDIMSampler(sd), settings).run(sd.initial_latent(0), cond, null, objective)
    assert result.best_index == 1
    assert torch.equal(result.inputs["z_T"], sd.initial_latent(0))
    assert torch.equal(result.inputs["uncond"], null.expand_as(result.inputs["uncond"]))
    assert not torch.equal(result.inputs["cond"], cond.expand_as(result.inputs["cond"]))


def test_training_loss_is_the_weighted_sum_over_the_last_k_steps(setup):
    """A probe objective hands back one leaf per training call: its gradient is the weight that call's image got
    in the training loss, and its latents show which sampler step the image came from."""
    sd, f, g, cond, null = setup
    sampler = DDIMSampler(sd, checkpointing=False)
    z_T = sd.initial_latent(1)
    calls = []

    def probe(images, augment=False, latents=None):
        if not augment:
            return images.mean(), {}
        weight_probe = torch.zeros((), requires_grad=True)
        calls.append((latents.detach().clone(), images.detach().clone(), weight_probe))
        return images.mean() * 0 + weight_probe, {}

    settings = OptimSettings(steps=1, loss_steps=3)
    DiginOptimizer(sampler, settings).run(z_T, cond, null, probe)
    assert len(calls) == 3
    assert [c[2].grad.item() for c in calls] == pytest.approx([1 / 6, 2 / 6, 3 / 6])
    with torch.no_grad():  # iterate 0 trains on the unmodified inputs: compare with a reference pass
        out = sampler.sample(z_T, cond, null, keep_last=3)
    T = sampler.num_steps
    expected = [out.x0_predictions[0], out.x0_predictions[1], out.latents]  # x0-hat of steps T-3, T-2; then z_0
    for (latents, images, _), want, step in zip(calls, expected, (T - 3, T - 2, T - 1)):
        assert torch.allclose(latents, want, atol=1e-6), f"the image weighted for step {step} came from elsewhere"
        assert torch.allclose(images, sampler.decode(want), atol=1e-6)
    assert not torch.allclose(out.x0_predictions[-1], out.latents, atol=1e-4)  # the last x0-hat is replaced by z_0
