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
    sampler = DDIMSampler(sd)
    z_T = sd.initial_latent(1)
    calls = []

    def probe(images, augment=False, latents=None):
        if not augment:
            return images.mean(), {}
        weight_probe = torch.zeros((), requires_grad=True)
        calls.append((latents.detach().clone(), images.detach().clone(), weight_probe))
        return images.mean() * 0 + weight_probe, {}

    settings = OptimSettings(steps=1, loss_steps=3, checkpointing=False)
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


# --- the lean step: two-stage backward, chunked cutouts, batched decode, checkpointing under a budget -----------

def _grads(sd, objective, cond, null, seed=0, sampler=None, **settings):
    """Gradients of one training step w.r.t. z_T and both per-step delta stacks (no Adam step)."""
    sampler = sampler or DDIMSampler(sd)
    opt = DiginOptimizer(sampler, OptimSettings(steps=1, loss_steps=3, **settings))
    T = sampler.num_steps
    z = sd.initial_latent(0).clone().requires_grad_()
    dc = torch.zeros((T, *cond.shape[-3:]), requires_grad=True)
    du = torch.zeros((T, *null.shape[-3:]), requires_grad=True)
    c, u = cond + dc, null + 0.5 * du  # a non-trivial path to the null deltas
    opt.plan_checkpointing(z, c, u)
    latents, images = opt.render(z, c, u)
    torch.manual_seed(seed)  # cutouts come from the global RNG: the same draws for every variant
    loss = opt.training_backward(objective, images, latents, linear_weights(3))
    return [z.grad, dc.grad, du.grad], float(loss), opt


def _assert_close(got, want, rel=1e-5):
    for a, b in zip(got, want):
        assert b.norm() > 0
        assert ((a - b).norm() / b.norm()).item() <= rel


@pytest.fixture(scope="module")
def counterfactual(setup):
    from digin_cli.objectives import Counterfactual, ForegroundAwareDistance

    _, f, _, _, _ = setup
    gen = torch.Generator().manual_seed(3)
    px_mask = torch.zeros(1, 1, 64, 64)
    px_mask[..., 16:48, 16:48] = 1
    latent_mask = torch.nn.functional.interpolate(px_mask, size=(8, 8))
    distance = ForegroundAwareDistance(torch.rand(1, 3, 64, 64, generator=gen), torch.randn(1, 4, 8, 8, generator=gen),
                                       px_mask, latent_mask)
    return Counterfactual(f, 2, distance, Cutouts(16, 0.3, 0.005), start=1)


def test_two_stage_gradients_equal_single_backward_for_any_chunk(setup):
    sd, f, g, cond, null = setup
    objective = Disagreement(f, g, target=1, cutouts=Cutouts(16, 0.3, 0.005))
    want, want_loss, _ = _grads(sd, objective, cond, null, two_stage=False)
    for chunk in (1, 3, 16):
        got, loss, _ = _grads(sd, objective, cond, null, two_stage=True, chunk=chunk)
        _assert_close(got, want)
        assert loss == pytest.approx(want_loss, rel=1e-5)


def test_two_stage_gradients_equal_for_counterfactual_with_latent_distance(setup, counterfactual):
    sd, _, _, cond, null = setup
    want, want_loss, _ = _grads(sd, counterfactual, cond, null, two_stage=False)
    for chunk in (3, 16):
        got, loss, _ = _grads(sd, counterfactual, cond, null, two_stage=True, chunk=chunk)
        _assert_close(got, want)
        assert loss == pytest.approx(want_loss, rel=1e-5)


def test_two_stage_serves_plain_callables_on_image_and_latent_leaves(setup):
    sd, _, _, cond, null = setup

    def objective(images, augment, latents):  # reads both: gradients must reach the sampler through each
        return (images ** 2).mean() + (latents ** 3).mean(), {}

    want, _, _ = _grads(sd, objective, cond, null, two_stage=False)
    got, _, _ = _grads(sd, objective, cond, null, two_stage=True)
    _assert_close(got, want)


class _ProbeViews(Disagreement):
    """Records every view the classifier f sees, in order."""

    def __init__(self, f, g, cutouts):
        super().__init__(f, g, 0, cutouts)
        self.seen = []

    def view_losses(self, views):
        self.seen.append(views[0].detach().clone())
        return super().view_losses(views)


def test_cutouts_seen_by_each_view_do_not_depend_on_chunk_size(setup):
    sd, f, g, cond, null = setup
    seen = {}
    for chunk in (1, 3, 16):
        probe = _ProbeViews(f, g, Cutouts(16, 0.3, 0.005, generator=torch.Generator().manual_seed(7)))
        _grads(sd, probe, cond, null, chunk=chunk)
        assert max(v.shape[0] for v in probe.seen) == min(chunk, 16)
        seen[chunk] = torch.cat(probe.seen)
    assert seen[1].shape[0] == 3 * 16  # 16 views of each of the k = 3 loss images
    assert torch.equal(seen[1], seen[3]) and torch.equal(seen[1], seen[16])


def test_loss_images_are_decoded_in_one_batch_equal_to_one_by_one(setup):
    sd, _, _, cond, null = setup
    sampler = DDIMSampler(sd)
    with torch.no_grad():
        latents, images = DiginOptimizer(sampler, OptimSettings(loss_steps=3)).render(sd.initial_latent(0), cond, null)
        assert len(images) == 3
        for z, x in zip(latents, images):
            assert torch.allclose(x, sampler.decode(z), atol=1e-6)


def _render_saved_bytes(opt, z, c, u):
    from digin_cli.optimize import saved_bytes

    return saved_bytes(lambda: opt.render(z, c, u), opt.sampler.sd.unet)


def test_auto_checkpointing_fits_the_budget_and_keeps_gradients(setup):
    from digin_cli.optimize import step_activation_bytes

    sd, f, g, cond, null = setup
    sampler = DDIMSampler(sd)
    T = sampler.num_steps
    step = step_activation_bytes(sampler, sd.initial_latent(0), cond, null)
    assert step > 0
    objective = Disagreement(f, g, target=1, cutouts=Cutouts(4, 0.3, 0.005))
    want, _, _ = _grads(sd, objective, cond, null, sampler=sampler, checkpointing=True)
    saved = []
    for budget_steps, plain in ((0.5, 0), (2.5, 2), (T + 0.5, T)):
        got, _, opt = _grads(sd, objective, cond, null, sampler=sampler, checkpointing="auto",
                             memory_budget_gb=budget_steps * step / 2**30)
        assert opt.memory.plain_steps == plain and opt.memory.step_bytes == step
        _assert_close(got, want)
        z = sd.initial_latent(0).clone().requires_grad_()
        c, u = cond.clone().requires_grad_(), null.clone().requires_grad_()  # as in the measured step
        saved.append(_render_saved_bytes(opt, z, c, u))
    # What autograd holds grows with the un-checkpointed steps, by about one measured step each.
    assert saved[0] < saved[1] < saved[2]
    assert (saved[1] - saved[0]) == pytest.approx(2 * step, rel=0.25)


def test_auto_leaves_the_decode_plain_only_when_every_step_and_the_decoder_fit(setup):
    from digin_cli.optimize import decode_activation_bytes, step_activation_bytes

    sd, f, g, cond, null = setup
    sampler = DDIMSampler(sd)
    T = sampler.num_steps
    z = sd.initial_latent(0)
    step = step_activation_bytes(sampler, z, cond, null)
    decode = decode_activation_bytes(sampler, z.new_zeros((3, *z.shape[1:])))  # k = 3 loss latents, one batch
    assert decode > 0
    objective = Disagreement(f, g, target=1, cutouts=Cutouts(4, 0.3, 0.005))
    want, _, _ = _grads(sd, objective, cond, null, sampler=sampler, checkpointing=True)
    for extra, plain_decode in ((decode - 1, False), (decode, True)):
        got, _, opt = _grads(sd, objective, cond, null, sampler=sampler, checkpointing="auto",
                             memory_budget_gb=(T * step + extra) / 2**30)
        assert opt.memory.plain_steps == T and opt.memory.plain_decode is plain_decode and opt.memory.decode_bytes == decode
        _assert_close(got, want)
        u = sd.initial_latent(0).clone().requires_grad_()
        saved = _render_saved_bytes(opt, u, cond.clone().requires_grad_(), null.clone().requires_grad_())
        # A plain decode keeps the decoder's activations (about the measured bytes) on top of the T steps'.
        if plain_decode:
            assert saved - held == pytest.approx(decode, rel=0.25)
        held = saved


def test_auto_checkpointing_without_budget_on_cpu_checkpoints_everything(setup):
    sd, _, _, cond, null = setup
    opt = DiginOptimizer(DDIMSampler(sd), OptimSettings(checkpointing="auto"))
    assert opt.plan_checkpointing(sd.initial_latent(0), cond, null) == 0
    assert DiginOptimizer(DDIMSampler(sd), OptimSettings(checkpointing=False)).plan_checkpointing(
        sd.initial_latent(0), cond, null) == DDIMSampler(sd).num_steps


def test_checkpointing_is_the_loops_setting_whatever_the_sampler_was_built_with(setup):
    """``optimizer.checkpointing`` alone decides what a training render keeps (there is no "follow the sampler"
    value any more): the sampler's own flag changes nothing."""
    sd, _, _, cond, null = setup
    held = {}
    for built_with in (True, False):
        for setting in (True, False):
            opt = DiginOptimizer(DDIMSampler(sd, checkpointing=built_with), OptimSettings(checkpointing=setting))
            z = sd.initial_latent(0).clone().requires_grad_()
            opt.plan_checkpointing(z, cond, null)
            held[built_with, setting] = _render_saved_bytes(opt, z, cond.clone().requires_grad_(),
                                                            null.clone().requires_grad_())
    assert held[True, True] == held[False, True] < held[True, False] == held[False, False]


def test_progress_reaches_the_loop_as_a_callback(setup):
    sd, f, g, cond, null = setup
    seen = []

    def progress(iterates, description):
        for it in iterates:
            seen.append((description, it))
            yield it

    objective = Disagreement(f, g, target=1, cutouts=Cutouts(2, 0.3, 0.005))
    result = DiginOptimizer(DDIMSampler(sd), OptimSettings(steps=2), progress=progress).run(
        sd.initial_latent(0), cond, null, objective, description="planted")
    assert seen == [("planted", 0), ("planted", 1), ("planted", 2)] and len(result.iterates) == 3
