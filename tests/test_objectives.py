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
