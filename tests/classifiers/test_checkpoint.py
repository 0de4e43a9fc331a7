"""Local checkpoints in the wrappings people actually have (Madry robustness-library style included)."""

from __future__ import annotations

from collections import OrderedDict

import pytest
import torch
from safetensors.torch import save_file

from digin_cli.classifiers.checkpoint import clean_state_dict, load_into, load_state_dict_file
from digin_cli.classifiers.timm_zoo import TimmClassifier
from digin_cli.errors import DiginError


def _source() -> TimmClassifier:
    torch.manual_seed(3)
    return TimmClassifier("test_resnet", pretrained=False)


def _madry_style(state: dict) -> dict:
    """Keys like the robustness library writes: module.model.*, a module.attacker.model.* copy, normalizer stats."""
    wrapped = {f"module.model.{k}": v for k, v in state.items()}
    wrapped.update({f"module.attacker.model.{k}": torch.zeros_like(v) for k, v in state.items()})
    wrapped["module.normalizer.new_mean"] = torch.zeros(3, 1, 1)
    wrapped["module.normalizer.new_std"] = torch.ones(3, 1, 1)
    return wrapped


@pytest.mark.parametrize("fmt", ["pt", "safetensors"])
def test_wrapped_checkpoints_load_and_reproduce_the_source(tmp_path, images, fmt):
    src = _source()
    state = _madry_style(src.model.state_dict())
    path = tmp_path / f"robust.{fmt}"
    if fmt == "pt":
        torch.save({"model": state, "epoch": 90, "optimizer": {"lr": torch.tensor(0.1)}}, path)
    else:
        save_file({k: v.contiguous() for k, v in state.items()}, str(path))

    torch.manual_seed(99)  # a different random init: equality below can only come from the loaded weights
    clf = TimmClassifier("test_resnet", pretrained=False, checkpoint=str(path))
    torch.testing.assert_close(clf(images), src(images), rtol=0, atol=0)


def test_nested_state_dict_and_dataparallel_prefix(tmp_path):
    src = _source()
    path = tmp_path / "ckpt.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in src.model.state_dict().items()}}, path)
    loaded = load_state_dict_file(path)
    assert set(loaded) == set(src.model.state_dict())


def test_model_prefix_is_kept_when_it_is_a_real_submodule():
    # Only a prefix shared by every key is a wrapper; 'model.' on some keys is part of the architecture.
    state = {"model.weight": torch.zeros(1), "head.weight": torch.zeros(1)}
    assert set(clean_state_dict(state)) == {"model.weight", "head.weight"}


def test_missing_file_names_path_and_config_key(tmp_path):
    with pytest.raises(DiginError) as e:
        load_state_dict_file(tmp_path / "nope.pt")
    assert "nope.pt" in str(e.value) and "classifier.checkpoint=" in str(e.value)


def test_wrong_architecture_lists_offending_keys(tmp_path):
    path = tmp_path / "other.pt"
    torch.save({"fc.weight": torch.zeros(2, 2), "conv9.weight": torch.zeros(1)}, path)
    clf = _source()
    with pytest.raises(DiginError) as e:
        load_into(clf.model, path)
    msg = str(e.value)
    assert "missing keys" in msg and "unexpected keys: conv9.weight" in msg and "shape mismatch: fc.weight" in msg


def test_pickled_objects_are_refused_unless_trusted(tmp_path):
    src = _source()
    path = tmp_path / "pickled.pt"
    torch.save({"model": src.model.state_dict(), "args": _Opaque()}, path)
    with pytest.raises(DiginError, match="trusted_checkpoint=true"):
        load_state_dict_file(path)
    assert set(load_state_dict_file(path, trusted=True)) == set(src.model.state_dict())


class _Opaque:
    pass


def _old_format_resnet(tmp_path, metadata_version: int | None):
    """torchvision resnet18(10 classes) saved as a pre-0.4.1 torch would: no BatchNorm ``num_batches_tracked``,
    every key under DataParallel's ``module.``; ``metadata_version`` is what ``_metadata`` says of BatchNorm."""
    import torchvision

    torch.manual_seed(5)
    net = torchvision.models.resnet18(num_classes=10).eval()
    with torch.no_grad():  # non-trivial statistics: eval-mode BatchNorm really uses the loaded buffers
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    own = net.state_dict()
    state = OrderedDict((f"module.{k}", v) for k, v in own.items() if not k.endswith("num_batches_tracked"))
    if metadata_version is not None:
        state._metadata = OrderedDict(
            ("module" + (f".{k}" if k else ""), {**v, "version": metadata_version} if "bn" in k or "downsample.1" in k
             else v) for k, v in own._metadata.items())
    path = tmp_path / "resnet18_old.pth"
    torch.save(state, path)
    return net, path


@pytest.mark.parametrize("metadata_version", [None, 1])
def test_old_batchnorm_checkpoint_loads_as_torch_strict_does(tmp_path, metadata_version):
    import torchvision

    net, path = _old_format_resnet(tmp_path, metadata_version)
    torch.manual_seed(77)
    fresh = torchvision.models.resnet18(num_classes=10).eval()
    load_into(fresh, path)  # the old code refused: "missing keys: bn1.num_batches_tracked, ..."
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(fresh(x), net(x), rtol=0, atol=0)


def test_a_checkpoint_torch_refuses_strictly_is_refused_with_its_keys(tmp_path):
    import torchvision

    # _metadata says version 2 (the counter exists since then), so torch's strict load calls it missing: so do we.
    net, path = _old_format_resnet(tmp_path, metadata_version=2)
    with pytest.raises(RuntimeError, match="num_batches_tracked"):
        torchvision.models.resnet18(num_classes=10).load_state_dict(
            clean_state_dict(torch.load(path, weights_only=True)), strict=True)
    with pytest.raises(DiginError) as e:
        load_into(torchvision.models.resnet18(num_classes=10), path)
    msg = str(e.value)
    assert "\n" not in msg and "missing keys: bn1.num_batches_tracked" in msg and "(+" in msg
