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
