"""Random-weight backbones for the metrics, built here and loaded through the same code paths (weights files,
checkpoint formats) as the real weights; and small test images."""

import pytest
import torch

from digin_cli.evaluation import backbones as B


@pytest.fixture(scope="session")
def random_inception(tmp_path_factory):
    """torch-fidelity's FID InceptionV3 with random weights, saved as a weights file (what --inception loads)."""
    import torch_fidelity.feature_extractor_inceptionv3 as fe

    patch = pytest.MonkeyPatch()
    patch.setattr(fe, "load_state_dict_from_url", lambda *a, **k: None)  # no download: keep the random init
    patch.setattr(fe.FeatureExtractorInceptionV3, "load_state_dict", lambda self, *a, **k: None)
    try:
        torch.manual_seed(0)
        model = fe.FeatureExtractorInceptionV3("inception-v3-compat", ["2048"])
    finally:
        patch.undo()
    path = tmp_path_factory.mktemp("inception") / "weights-inception-random.pth"
    torch.save(model.state_dict(), path)
    return B.inception(path, torch.device("cpu"))


@pytest.fixture(scope="session")
def lpips_and_backbone(tmp_path_factory):
    """LPIPS with a random-weight AlexNet, loaded through --lpips-backbone (a torchvision state dict file)."""
    import torchvision

    torch.manual_seed(0)
    state = torchvision.models.alexnet().state_dict()
    path = tmp_path_factory.mktemp("lpips") / "alexnet-random.pth"
    torch.save(state, path)
    return B.lpips_model("alex", path, torch.device("cpu")), state


@pytest.fixture(scope="session")
def random_lpips(lpips_and_backbone):
    return lpips_and_backbone[0]


@pytest.fixture(scope="session")
def random_simsiam(tmp_path_factory):
    """A random SimSiam encoder saved in the official checkpoint format; returns the checkpoint path."""
    torch.manual_seed(0)
    encoder = B.simsiam_architecture(dim=2048)
    state = {f"module.encoder.{k}": v for k, v in encoder.state_dict().items()}
    state["module.predictor.0.weight"] = torch.zeros(512, 2048)  # the official file holds the predictor too
    path = tmp_path_factory.mktemp("simsiam") / "checkpoint_0099.pth.tar"
    torch.save({"epoch": 100, "state_dict": state}, path)
    return path
