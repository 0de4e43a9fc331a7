"""Feature extractors of the metrics, loaded offline first: a path option, else torch's usual cache
(``torch.hub.get_dir()/checkpoints``), else a download unless ``HF_HUB_OFFLINE=1``; missing offline, one line names
the file and where to get it.

- FID / KID / split-FID: torch-fidelity's InceptionV3 (the TensorFlow FID weights converted to PyTorch), the
  network torchmetrics' FID uses and the same weights as pytorch-fid, which ACE's scripts call.
- LPIPS: the ``lpips`` package (linear calibration weights ship inside it) over torchvision's AlexNet / VGG16.
- S³: a SimSiam ResNet-50 checkpoint in the official format (facebookresearch/simsiam, ``state_dict`` with
  ``module.encoder.*`` keys), as ACE loads it; only the user can pass it.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable
from pathlib import Path

import torch

from digin_cli.errors import DiginError

INCEPTION_URL = ("https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/"
                 "weights-inception-2015-12-05-6726825d.pth")
LPIPS_BACKBONES = {"alex": "https://download.pytorch.org/models/alexnet-owt-7be5be79.pth",
                   "vgg": "https://download.pytorch.org/models/vgg16-397923af.pth"}


def _weights_file(path: str | os.PathLike | None, url: str, option: str, what: str) -> Path:
    """The local file of ``url``'s weights: ``path``, or the torch hub cache, downloaded there when allowed."""
    if path:
        path = Path(path).expanduser()
        if not path.is_file():
            raise DiginError(f"{what} weights not found: {path} — pass {option}=<the {Path(url).name} file>")
        return path
    cached = Path(torch.hub.get_dir()) / "checkpoints" / Path(url).name
    if cached.is_file():
        return cached
    fix = (f"download {url} into {cached.parent}/ (or pass {option}=/path/to/{Path(url).name})")
    if os.environ.get("HF_HUB_OFFLINE") == "1":
        raise DiginError(f"{what} weights {cached.name} are not in the cache and HF_HUB_OFFLINE=1 — {fix}")
    try:
        torch.hub.download_url_to_file(url, str(cached), progress=False)
    except Exception as err:  # noqa: BLE001 — any network failure means the same fix
        raise DiginError(f"could not download {what} weights {cached.name} ({type(err).__name__}) — {fix}") from None
    return cached


def inception(path: str | os.PathLike | None, device: torch.device) -> Callable[[torch.Tensor], torch.Tensor]:
    """images (N, 3, H, W) in [0, 1] -> 2048 pool features of the FID Inception (resized to 299 inside)."""
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    weights = _weights_file(path, INCEPTION_URL, "--inception", "FID Inception")
    model = FeatureExtractorInceptionV3("inception-v3-compat", ["2048"],
                                        feature_extractor_weights_path=str(weights)).to(device).eval()

    def features(images: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():  # torch-fidelity takes uint8 images, as the TensorFlow original
            return model((images.clamp(0, 1) * 255).round().to(torch.uint8).to(device))[0].reshape(len(images), -1)

    return features


def lpips_model(net: str, path: str | os.PathLike | None, device: torch.device):
    """``lpips.LPIPS`` with ``net`` (alex | vgg) whose ImageNet backbone comes from ``path`` or torch's cache."""
    import lpips
    import torchvision

    if net not in LPIPS_BACKBONES:
        raise DiginError(f"unknown LPIPS network '{net}' — use --lpips-net alex or --lpips-net vgg")
    weights = _weights_file(path, LPIPS_BACKBONES[net], "--lpips-backbone", f"LPIPS {net}")
    with warnings.catch_warnings():  # lpips builds its random backbone with torchvision's deprecated pretrained=
        warnings.simplefilter("ignore", UserWarning)
        model = lpips.LPIPS(net=net, pnet_rand=True, verbose=False)  # the calibration weights ship with the package
    tv = torchvision.models.alexnet() if net == "alex" else torchvision.models.vgg16()
    tv.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    load_backbone(model, tv.features)
    return model.to(device).eval()


def load_backbone(model, features: torch.nn.Sequential) -> None:
    """Copy torchvision ``features`` layers into lpips' slices (which hold those layers under their indices)."""
    for name in dir(model.net):
        if name.startswith("slice"):
            for index, layer in getattr(model.net, name).named_children():
                layer.load_state_dict(features[int(index)].state_dict())


def simsiam_encoder(path: str | os.PathLike, device: torch.device) -> torch.nn.Module:
    """The SimSiam encoder (ResNet-50 + 3-layer projector, 2048-d) of an official checkpoint."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise DiginError(f"SimSiam checkpoint not found: {path} — pass --simsiam=<checkpoint_0099.pth.tar of "
                         "facebookresearch/simsiam>")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001
        raise DiginError(f"cannot read SimSiam checkpoint {path} ({type(err).__name__}) — pass the official "
                         "checkpoint (a dict with 'state_dict')") from None
    state = state.get("state_dict", state)
    prefix = "module.encoder."
    encoder_state = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    if not encoder_state:
        raise DiginError(f"{path} holds no 'module.encoder.*' weights — pass an official SimSiam checkpoint")
    encoder = simsiam_architecture()
    encoder.load_state_dict(encoder_state)
    return encoder.to(device).eval()


def simsiam_architecture(dim: int = 2048) -> torch.nn.Module:
    """SimSiam's encoder (Chen & He 2021): torchvision ResNet-50 whose fc is the 3-layer projection MLP."""
    import torchvision
    from torch import nn

    encoder = torchvision.models.resnet50(num_classes=dim, zero_init_residual=True)
    width = encoder.fc.weight.shape[1]
    encoder.fc = nn.Sequential(nn.Linear(width, width, bias=False), nn.BatchNorm1d(width), nn.ReLU(inplace=True),
                               nn.Linear(width, width, bias=False), nn.BatchNorm1d(width), nn.ReLU(inplace=True),
                               encoder.fc, nn.BatchNorm1d(dim, affine=False))
    return encoder
