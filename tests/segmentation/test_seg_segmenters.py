"""AttentionSegmenter, NoSegmenter, build_segmenter and every conf/segmentation/*.yaml."""

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from hydra.utils import get_method, instantiate
from omegaconf import OmegaConf

from digin_cli.api.builders import preset
from digin_cli.errors import DiginError
from digin_cli.segmentation import AttentionSegmenter, NoSegmenter, build_segmenter

CONF = Path(__file__).resolve().parents[2] / "conf" / "segmentation"


def _blob(size=64, cx=32, cy=32, sigma=8.0):
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    return torch.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * sigma**2)), (xx - cx) ** 2 + (yy - cy) ** 2


def test_attention_segmenter_blob():
    A, r2 = _blob()
    image = torch.rand(1, 3, 64, 64)
    s_px, s_vae = AttentionSegmenter().segment(image, A)
    assert s_px.shape == (1, 1, 64, 64) and s_vae.shape == (1, 1, 8, 8)
    assert s_px.min() >= 0 and s_px.max() <= 1
    assert (s_px[0, 0][r2 <= 8**2] > 0.9).all()       # the blob is foreground
    assert (s_px[0, 0][r2 >= 22**2] == 0).all()        # far from it is background (corners included)
    assert s_px[0, 0, 0, 0] == 0 and s_px[0, 0, -1, -1] == 0
    assert torch.allclose(s_vae, F.avg_pool2d(s_px, 8))


def test_attention_segmenter_low_res_map_latent_size_and_batch():
    A, _ = _blob(size=16, cx=8, cy=8, sigma=2.0)  # a 16 x 16 attention map, resized to the image
    image = torch.rand(2, 3, 64, 64)
    seg = AttentionSegmenter(ops=(), ops_reference_size=None)
    s_px, s_vae = seg.segment(image, A, latent_hw=(16, 16))
    assert s_px.shape == (2, 1, 64, 64) and s_vae.shape == (2, 1, 16, 16)
    assert set(s_px.unique().tolist()) == {0.0, 1.0}    # no ops: a binary mask
    assert s_px[0, 0, 32, 32] == 1 and s_px[0, 0, 2, 2] == 0
    assert torch.allclose(s_vae, F.avg_pool2d(s_px, 4))
    soft, _ = AttentionSegmenter(binarize=False, ops=()).segment(image[:1], A)
    assert 0 < soft.mean() < 1 and len(soft.unique()) > 2


def test_attention_segmenter_bad_ops_is_a_config_error():
    with pytest.raises(DiginError, match="segmentation.ops"):
        AttentionSegmenter(ops=["dilate_3"])


def test_no_segmenter_is_all_background():
    seg = NoSegmenter()
    s_px, s_vae = seg.segment(torch.rand(1, 3, 64, 64), None)
    assert not seg.active and AttentionSegmenter().active
    assert s_px.shape == (1, 1, 64, 64) and s_vae.shape == (1, 1, 8, 8)
    assert s_px.sum() == 0 and s_vae.sum() == 0


def test_build_segmenter_none_and_no_target():
    none = build_segmenter(preset("segmentation", "none"), "cpu")
    assert isinstance(none, NoSegmenter) and none.name == "none"
    assert isinstance(build_segmenter(OmegaConf.create({"name": "whatever"})), NoSegmenter)
    assert isinstance(build_segmenter(None), NoSegmenter)


def test_build_segmenter_attention_passes_device_and_name():
    seg = build_segmenter(preset("segmentation", "attention"), torch.device("cpu"))
    assert isinstance(seg, AttentionSegmenter)
    assert seg.name == "attention" and seg.device == torch.device("cpu")
    assert seg.ops == ("erosion_3", "dilation_20", "blur_45_30") and seg.threshold == 0.35


def test_build_segmenter_unwraps_digin_error():
    cfg = preset("segmentation", "attention")
    cfg.ops = ["blur_4_1"]
    with pytest.raises(DiginError, match="blur_4_1"):
        build_segmenter(cfg, "cpu")


@pytest.mark.parametrize("path", sorted(CONF.glob("*.yaml")), ids=lambda p: p.stem)
def test_every_config_has_name_comment_and_importable_target(path):
    text = path.read_text()
    assert text.lstrip().startswith("#"), "one-line comment first"
    cfg = preset("segmentation", path.stem)
    assert cfg.name == path.stem
    if path.stem == "none":
        assert "_target_" not in cfg
        return
    target = get_method(cfg._target_)  # imports the module and resolves the class
    assert callable(target)


@pytest.mark.parametrize("stem", ["attention", "tiny_sam"])
def test_weightless_configs_instantiate(stem):
    seg = instantiate(preset("segmentation", stem))  # plain hydra instantiate works too (name is accepted)
    s_px, s_vae = seg.segment(torch.rand(1, 3, 64, 64), _blob()[0])
    assert s_px.shape == (1, 1, 64, 64) and s_vae.shape == (1, 1, 8, 8)
