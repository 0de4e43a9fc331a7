"""classifier=torch_module: a user's nn.Module, checkpoint and names file, against the module computed by hand."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

from digin_cli.api.builders import preset
from digin_cli.classifiers import build_classifier
from digin_cli.classifiers.torch_module import TorchModuleClassifier
from digin_cli.errors import DiginError

ASSETS = Path(__file__).resolve().parents[1] / "assets"
CIFAR10 = ASSETS / "cifar10_classes.txt"
MEAN, STD = [0.4914, 0.4822, 0.4465], [0.2470, 0.2435, 0.2616]


@pytest.fixture(scope="module")
def resnet18_checkpoint(tmp_path_factory) -> tuple[Path, torch.nn.Module]:
    """A torchvision resnet18(num_classes=10) with random weights and BatchNorm statistics, saved as a state dict."""
    import torchvision

    torch.manual_seed(0)
    net = torchvision.models.resnet18(num_classes=10)
    with torch.no_grad():  # non-trivial running statistics, so eval-mode BatchNorm is really exercised
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    path = tmp_path_factory.mktemp("ckpt") / "resnet18_cifar10.pt"
    torch.save({"state_dict": {f"module.{k}": v for k, v in net.state_dict().items()}}, path)
    return path, net.eval()


def _cfg(**overrides):
    cfg = preset("classifier", "torch_module")
    base = {"model": {"_target_": "torchvision.models.resnet18", "num_classes": 10}, "class_names": str(CIFAR10),
            "input_size": 32, "mean": MEAN, "std": STD, "interpolation": "bilinear"}
    OmegaConf.set_struct(cfg, False)
    return OmegaConf.merge(cfg, {**base, **overrides})


@pytest.fixture
def user_nets(monkeypatch):
    monkeypatch.syspath_prepend(str(ASSETS))


def test_resnet18_state_dict_and_names_file_match_the_module(resnet18_checkpoint, make_images):
    path, net = resnet18_checkpoint
    clf = build_classifier(_cfg(checkpoint=str(path)), "cpu")
    assert isinstance(clf, TorchModuleClassifier)
    assert clf.class_names[3] == "cat" and clf.num_classes == 10 and clf.input_size == (32, 32)
    x = make_images(3, size=48)
    xn = (F.interpolate(x, size=(32, 32), mode="bilinear", antialias=True, align_corners=False)
          - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)
    from torchvision.models.feature_extraction import create_feature_extractor

    reference = create_feature_extractor(net, {"avgpool": "pooled", "fc": "logits"})
    with torch.no_grad():
        ref = reference(xn)
        torch.testing.assert_close(clf(x), net(xn), rtol=0, atol=1e-6)
        logits, feats = clf.logits_and_features(x)
        torch.testing.assert_close(logits, ref["logits"], rtol=0, atol=1e-6)
        torch.testing.assert_close(feats, ref["pooled"].flatten(1), rtol=0, atol=1e-6)
        torch.testing.assert_close(clf.features(x), ref["pooled"].flatten(1), rtol=0, atol=1e-6)
    assert ref["logits"].std() > 0 and clf.num_features == 512
    assert set(clf.state_dict()) == set(f"model.{k}" for k in net.state_dict())  # nothing registered twice
    w, b = clf.head()
    assert w.shape == (10, 512) and b.shape == (10,)
    torch.testing.assert_close(feats @ w.T + b, logits, rtol=1e-5, atol=1e-5)


def test_gradients_reach_the_input_and_parameters_stay_frozen(resnet18_checkpoint, make_images):
    clf = build_classifier(_cfg(checkpoint=str(resnet18_checkpoint[0])), "cpu")
    x = make_images(2, size=32).requires_grad_(True)
    clf(x)[:, 3].sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert not any(p.requires_grad for p in clf.parameters()) and not clf.training


def test_features_layer_by_name_and_a_layer_the_head_does_not_read(resnet18_checkpoint, make_images):
    path, net = resnet18_checkpoint
    x = make_images(2, size=32)
    pooled = build_classifier(_cfg(checkpoint=str(path), features_layer="avgpool"), "cpu")
    deep = build_classifier(_cfg(checkpoint=str(path), features_layer="layer4"), "cpu")
    with torch.no_grad():
        torch.testing.assert_close(pooled.features(x), build_classifier(_cfg(checkpoint=str(path)), "cpu").features(x))
        assert deep.features(x).shape == (2, 512 * 1 * 1) and deep.num_features == 512
    pooled.head(), deep.head()  # at 32 px layer4 is 1x1: flattened, it is exactly what fc reads
    with pytest.raises(DiginError, match="features_layer=layer3 is not linear"):
        build_classifier(_cfg(checkpoint=str(path), features_layer="layer3"), "cpu").head()


def test_user_package_on_the_path_and_a_nonlinear_output(user_nets, make_images):
    cfg = _cfg(model={"_target_": "digin_user_nets.nets.small_net", "num_classes": 10})
    clf = build_classifier(cfg, "cpu")
    assert clf.num_features == 64 and clf.head()[0].shape == (10, 64)
    post = build_classifier(_cfg(model={"_target_": "digin_user_nets.nets.SmallNet", "post": "log_softmax"}), "cpu")
    assert post.features(make_images(1, size=32)).shape == (1, 64)  # the last child is the Linear: its input
    with pytest.raises(DiginError, match="not linear"):
        post.head()


def test_a_model_without_a_final_linear_needs_features_layer(user_nets, make_images):
    plain = build_classifier(_cfg(model={"_target_": "digin_user_nets.nets.ConvNet"}), "cpu")
    x = make_images(2, size=32)
    assert plain(x).shape == (2, 10)
    with pytest.raises(DiginError, match="no final nn.Linear.*classifier.features_layer=.*body, head, pool"):
        plain.features(x)
    tapped = build_classifier(_cfg(model={"_target_": "digin_user_nets.nets.ConvNet"}, features_layer="body"), "cpu")
    assert tapped.features(x).shape == (2, 8 * 16 * 16) and tapped.num_features == 8 * 16 * 16
    with pytest.raises(DiginError, match="is not linear"):
        tapped.head()


def test_a_model_that_does_not_return_logits_is_a_one_line_error():
    cfg = _cfg(model={"_target_": "torch.nn.Conv2d", "in_channels": 3, "out_channels": 10, "kernel_size": 32},
               class_names=[str(i) for i in range(10)])
    with pytest.raises(DiginError, match="returns shape .*not \\(batch, classes\\) logits"):
        build_classifier(cfg, "cpu")


@pytest.mark.parametrize("override,match", [
    ({"model": {"_target_": "no_such_pkg.nets.resnet20"}}, "no module named 'no_such_pkg'.*PYTHONPATH"),
    ({"model": {"_target_": "torchvision.models.resnet_18"}}, "'torchvision.models' has no 'resnet_18'.*resnet18"),
    ({"model": {"_target_": "torchvision.models.resnet18", "num_clases": 10}}, "keyword arguments"),
    ({"class_names": [str(i) for i in range(9)]}, "9 names but torchvision.models.resnet18 gives 10 logits"),
    ({"features_layer": "avgpol"}, "unknown classifier2?.features_layer 'avgpol'.*avgpool"),
    ({"mean": [0.5, 0.5]}, "classifier.mean must be 3 numbers"),
    ({"std": [0.5, 0.0, 0.5]}, "classifier.std must be 3 numbers"),
    ({"interpolation": "nearest"}, "classifier.interpolation must be one of"),
    ({"input_size": [32, 32, 3]}, "classifier.input_size must be"),
    ({"checkpoint": "/nonexistent/w.pt"}, "checkpoint not found"),
])
def test_bad_inputs_are_one_line_errors(override, match):
    with pytest.raises(DiginError, match=match) as e:
        build_classifier(_cfg(**override), "cpu", key="classifier2" if "features_layer" in override else "classifier")
    assert "\n" not in str(e.value)
    if "features_layer" in override:
        assert "classifier2.features_layer" in str(e.value)


def test_checkpoint_of_another_architecture_names_the_model_node(tmp_path):
    import torchvision

    torch.save(torchvision.models.resnet18(num_classes=100).state_dict(), tmp_path / "c100.pt")
    with pytest.raises(DiginError, match="shape mismatch: fc.weight.*classifier.model"):
        build_classifier(_cfg(checkpoint=str(tmp_path / "c100.pt")), "cpu")


def test_missing_preprocessing_and_names_are_listed_with_examples():
    cfg = preset("classifier", "torch_module")
    cfg.model._target_ = "torchvision.models.resnet18"
    with pytest.raises(DiginError) as e:
        build_classifier(cfg, "cpu", key="classifier2")
    msg = str(e.value)
    for key in ("class_names", "input_size", "mean", "std", "interpolation"):
        assert f"classifier2.{key}" in msg
    assert "meaningless gradients" in msg and "model._target_" not in msg


def test_an_old_format_checkpoint_without_num_batches_tracked_loads_and_gives_the_same_logits(
        resnet18_checkpoint, tmp_path, make_images):
    # As the widely used 2018 CIFAR checkpoints: a torch < 0.4.1 state dict (no BatchNorm num_batches_tracked) under
    # DataParallel's 'module.'. torch's strict load accepts it (BatchNorm fills the counter), so digin must too.
    _, net = resnet18_checkpoint
    old = {f"module.{k}": v for k, v in net.state_dict().items() if not k.endswith("num_batches_tracked")}
    path = tmp_path / "old.pth"
    torch.save(old, path)
    clf = build_classifier(_cfg(checkpoint=str(path)), "cpu")
    x = make_images(2, size=32)
    xn = (x - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)
    with torch.no_grad():
        torch.testing.assert_close(clf(x), net(xn), rtol=0, atol=1e-6)
        assert net(xn).std() > 0
