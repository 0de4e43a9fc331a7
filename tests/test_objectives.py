import torch

from digin_cli.augment import Cutouts
from digin_cli.classifiers.tiny import TinyClassifier
from digin_cli.objectives import Disagreement


def test_disagreement_is_eq3_on_probabilities_and_differentiable():
    f, g = TinyClassifier(seed=1), TinyClassifier(seed=2)
    images = torch.rand(1, 3, 64, 64, requires_grad=True)
    loss, metrics = Disagreement(f, g, target=7, cutouts=Cutouts(4))(images, augment=False)
    p_f, p_g = f(images).softmax(-1)[0, 7], g(images).softmax(-1)[0, 7]
    assert torch.allclose(loss, p_g - p_f, atol=1e-7)
    assert metrics["p_f"] == p_f.item() and metrics["p_g"] == p_g.item()
    loss.backward()
    assert images.grad.abs().sum() > 0


def test_augmented_loss_differs_from_plain_but_stays_close():
    f, g = TinyClassifier(seed=1), TinyClassifier(seed=2)
    images = torch.rand(1, 3, 64, 64)
    objective = Disagreement(f, g, target=3, cutouts=Cutouts(16))
    plain, _ = objective(images, augment=False)
    augmented, _ = objective(images, augment=True)
    assert plain.item() != augmented.item()
    assert abs(plain.item() - augmented.item()) < 0.5


def test_foreground_aware_distance_is_eq4_and_ignores_the_foreground():
    from digin_cli.objectives import ForegroundAwareDistance

    original = torch.rand(1, 3, 16, 16)
    latent_original = torch.rand(1, 4, 2, 2)
    px_mask = torch.zeros(1, 1, 16, 16)
    px_mask[..., :8, :] = 1  # top half is the object
    latent_mask = torch.zeros(1, 1, 2, 2)
    latent_mask[..., :1, :] = 1
    distance = ForegroundAwareDistance(original, latent_original, px_mask, latent_mask, w_vae=25, w_px=250)
    changed = original.clone()
    changed[..., :8, :] += 0.5  # change only the object
    latents = latent_original.clone()
    latents[..., :1, :] += 1.0
    d, parts = distance(changed, latents)
    assert d.item() == 0 and parts == {"d_vae": 0.0, "d_px": 0.0}
    changed[..., 8:, :] += 0.1  # now the background moves too
    latents[..., 1:, :] += 0.2
    d, parts = distance(changed, latents)
    expected_px = (0.1 ** 2) * 0.5  # half the pixels, mean over all
    expected_vae = (0.2 ** 2) * 0.5
    assert abs(parts["d_px"] - expected_px) < 1e-6 and abs(parts["d_vae"] - expected_vae) < 1e-6
    assert abs(d.item() - (25 * expected_vae + 250 * expected_px)) < 1e-5


def test_counterfactual_is_eq5():
    from digin_cli.objectives import Counterfactual, ForegroundAwareDistance

    f = TinyClassifier(seed=1)
    original = torch.rand(1, 3, 64, 64)
    distance = ForegroundAwareDistance(original, torch.zeros(1, 4, 8, 8), torch.zeros(1, 1, 64, 64),
                                       torch.zeros(1, 1, 8, 8))
    images = torch.rand(1, 3, 64, 64)
    loss, metrics = Counterfactual(f, 5, distance, Cutouts(2), start=9)(images, False, torch.zeros(1, 4, 8, 8))
    log_p = f(images).log_softmax(-1)[0, 5]
    expected = 250 * ((images - original) ** 2).mean() - log_p
    assert abs(loss.item() - expected.item()) < 1e-5
    assert abs(metrics["p_start"] - f(images).softmax(-1)[0, 9].item()) < 1e-6


def test_training_path_never_converts_to_python_numbers(monkeypatch):
    """The training loss (augment=True) must not sync with the device: metrics stay detached tensors there."""
    from digin_cli.objectives import Counterfactual, ForegroundAwareDistance

    f, g = TinyClassifier(seed=1), TinyClassifier(seed=2)
    images = torch.rand(1, 3, 64, 64, requires_grad=True)
    distance = ForegroundAwareDistance(torch.rand(1, 3, 64, 64), torch.zeros(1, 4, 8, 8),
                                       torch.zeros(1, 1, 64, 64), torch.zeros(1, 1, 8, 8))
    objectives = [Disagreement(f, g, target=3, cutouts=Cutouts(2)), Counterfactual(f, 5, distance, Cutouts(2), 9)]
    conversions = []

    def spy(name, original):
        def wrapper(self, *args, **kwargs):
            conversions.append(name)
            return original(self, *args, **kwargs)
        return wrapper

    monkeypatch.setattr(torch.Tensor, "item", spy("item", torch.Tensor.item))
    monkeypatch.setattr(torch.Tensor, "__float__", spy("float", torch.Tensor.__float__))
    for objective in objectives:
        loss, metrics = objective(images, True, torch.zeros(1, 4, 8, 8))
        loss.backward()
        assert conversions == [], type(objective).__name__
        assert all(isinstance(v, torch.Tensor) and not v.requires_grad for v in metrics.values())
        _, evaluated = objective(images, False, torch.zeros(1, 4, 8, 8))
        assert conversions and all(isinstance(v, float) for v in evaluated.values())  # the spy does see them
        conversions.clear()


def test_chunks_of_views_add_up_to_the_mean_over_views():
    from digin_cli.objectives import Counterfactual, ForegroundAwareDistance

    f, g = TinyClassifier(seed=1), TinyClassifier(seed=2)
    images = torch.rand(1, 3, 64, 64)
    objective = Disagreement(f, g, target=3, cutouts=Cutouts(5))
    draws = objective.draw(images, generator=torch.Generator().manual_seed(0))
    chunks = sum(objective.chunk_loss(images, draws, slice(s, s + 2)) for s in range(0, 5, 2))
    views = [objective.cutouts.apply(images, d) for d in draws]
    p_f = f(views[0]).softmax(-1)[:, 3].mean()
    p_g = g(views[1]).softmax(-1)[:, 3].mean()
    assert torch.allclose(chunks, p_g - p_f, atol=1e-7)  # Eq. 3 over cutouts, each classifier its own views
    distance = ForegroundAwareDistance(torch.rand(1, 3, 64, 64), torch.zeros(1, 4, 8, 8), torch.zeros(1, 1, 64, 64),
                                       torch.zeros(1, 1, 8, 8))
    cf = Counterfactual(f, 5, distance, Cutouts(0))
    loss, metrics = cf(images, True, torch.ones(1, 4, 8, 8))
    assert metrics == {}  # the training path reports nothing (no host syncs)
    assert torch.allclose(loss, cf(images, False, torch.ones(1, 4, 8, 8))[0], atol=1e-6)  # no cutouts: one view


def test_foreground_keep_costs_object_changes_and_frees_the_background():
    from digin_cli.objectives import ForegroundAwareDistance

    original, latent_original = torch.rand(1, 3, 16, 16), torch.rand(1, 4, 2, 2)
    px_mask, latent_mask = torch.zeros(1, 1, 16, 16), torch.zeros(1, 1, 2, 2)
    px_mask[..., :8, :] = 1  # top half is the object
    latent_mask[..., :1, :] = 1
    distance = ForegroundAwareDistance(original, latent_original, px_mask, latent_mask, 25, 250, keep="foreground")
    changed, latents = original.clone(), latent_original.clone()
    changed[..., 8:, :] += 0.5  # background only: free
    latents[..., 1:, :] += 1.0
    d, parts = distance(changed, latents)
    assert d.item() == 0 and parts == {"d_vae": 0.0, "d_px": 0.0}
    changed[..., :8, :] += 0.1  # the object moves: Eq. 4 with S in place of 1 - S
    latents[..., :1, :] += 0.2
    d, parts = distance(changed, latents)
    assert abs(parts["d_px"] - 0.1 ** 2 * 0.5) < 1e-6 and abs(parts["d_vae"] - 0.2 ** 2 * 0.5) < 1e-6
    assert abs(d.item() - (25 * 0.2 ** 2 * 0.5 + 250 * 0.1 ** 2 * 0.5)) < 1e-5


def test_feature_activation_is_eq6_with_sign_for_neurons_and_directions():
    from digin_cli.objectives import FeatureActivation

    f = TinyClassifier(seed=1)
    images = torch.rand(2, 3, 64, 64, requires_grad=True)
    feats = f.features(images)
    loss, metrics = FeatureActivation(f, 5, +1, Cutouts(2), report_class=9)(images, False)
    assert torch.allclose(loss, -feats[:, 5].mean(), atol=1e-6)
    assert abs(metrics["phi"] - feats[:, 5].mean().item()) < 1e-6
    assert abs(metrics["p_class"] - f(images).softmax(-1)[:, 9].mean().item()) < 1e-6
    loss_min, m_min = FeatureActivation(f, 5, -1, None)(images, False)
    assert torch.allclose(loss_min, feats[:, 5].mean(), atol=1e-6) and "p_class" not in m_min
    v = torch.randn(f.num_features)
    loss_v, m_v = FeatureActivation(f, v, +1, None, offset=-0.5)(images, False)
    assert torch.allclose(loss_v, -((feats @ v).mean() - 0.5), atol=1e-5)  # a constant shift, same gradient
    assert abs(m_v["phi"] - ((feats @ v).mean().item() - 0.5)) < 1e-5
    # Gradient ascent on the input along -loss raises phi_5 (max) and lowers it (min).
    for sign in (+1, -1):
        x = images.detach().clone().requires_grad_(True)
        objective = FeatureActivation(f, 5, sign, Cutouts(4))
        before = f.features(x)[:, 5].mean().item()
        objective(x, True)[0].backward()
        with torch.no_grad():
            after = f.features(x - 0.05 * x.grad.sign())[:, 5].mean().item()
        assert (after - before) * sign > 0


def test_neuron_counterfactual_adds_the_foreground_distance():
    from digin_cli.objectives import FeatureActivation, ForegroundAwareDistance, NeuronCounterfactual

    f = TinyClassifier(seed=1)
    original = torch.rand(1, 3, 64, 64)
    mask = torch.zeros(1, 1, 64, 64)
    mask[..., 16:48, 16:48] = 1
    distance = ForegroundAwareDistance(original, torch.zeros(1, 4, 8, 8), mask, torch.zeros(1, 1, 8, 8),
                                       keep="foreground")
    images = torch.rand(1, 3, 64, 64)
    loss, metrics = NeuronCounterfactual(FeatureActivation(f, 3, -1, None, report_class=2), distance)(
        images, False, torch.zeros(1, 4, 8, 8))
    expected = f.features(images)[0, 3] + 250 * (mask * (images - original) ** 2).mean()
    assert abs(loss.item() - expected.item()) < 1e-5
    assert {"phi", "p_class", "distance", "d_px", "d_vae", "loss"} <= set(metrics)


def test_neuron_objectives_chunk_exactly():
    """The loop's chunked backward adds per-view chunks: halves of the drawn views sum to the whole mean."""
    from digin_cli.objectives import FeatureActivation, ForegroundAwareDistance, NeuronCounterfactual

    f = TinyClassifier(seed=1)
    images = torch.rand(1, 3, 64, 64)
    distance = ForegroundAwareDistance(images.clone(), torch.zeros(1, 4, 8, 8), torch.ones(1, 1, 64, 64),
                                       torch.ones(1, 1, 8, 8), keep="foreground")
    objective = NeuronCounterfactual(FeatureActivation(f, 2, +1, Cutouts(4)), distance)
    draws = objective.draw(images, torch.Generator().manual_seed(0))
    whole = objective.chunk_loss(images, draws, slice(None))
    halves = objective.chunk_loss(images, draws, slice(0, 2)) + objective.chunk_loss(images, draws, slice(2, 4))
    assert abs(whole.item() - halves.item()) < 1e-6
    views = objective.cutouts.apply(images, draws[0], slice(None))
    assert abs(whole.item() + f.features(views)[:, 2].mean().item()) < 1e-5


def test_class_cross_entropy_is_diffexplainer_eq3():
    from torch.nn.functional import cross_entropy

    from digin_cli.objectives import ClassCrossEntropy

    f = TinyClassifier(seed=1)
    images = torch.rand(2, 3, 64, 64, requires_grad=True)
    loss, metrics = ClassCrossEntropy(f, target=5)(images, augment=False)
    assert torch.allclose(loss, cross_entropy(f(images), torch.tensor([5, 5])), atol=1e-6)
    assert metrics["p_class"] == torch.exp(-loss).item() or abs(metrics["p_class"] - torch.exp(-loss).item()) < 1e-6
    loss.backward()
    assert images.grad.abs().sum() > 0


def test_class_feature_is_ce_minus_weighted_feature_eq5():
    from torch.nn.functional import cross_entropy

    from digin_cli.objectives import ClassFeature

    f = TinyClassifier(seed=1)
    images = torch.rand(1, 3, 64, 64)
    for weight in (1.0, 0.5):
        loss, metrics = ClassFeature(f, target=5, feature=3, feature_weight=weight)(images, augment=False)
        expected = cross_entropy(f(images), torch.tensor([5])) - weight * f.features(images)[0, 3]
        assert torch.allclose(loss, expected, atol=1e-5)
        assert abs(metrics["phi"] - f.features(images)[0, 3].item()) < 1e-5
    # Training views without cutouts are the image itself: the training loss equals the plain one.
    plain, _ = ClassFeature(f, 5, 3)(images, augment=False)
    assert torch.allclose(ClassFeature(f, 5, 3)(images, augment=True)[0], plain, atol=1e-6)
