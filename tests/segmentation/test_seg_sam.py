"""Tiny random SAM / HQ-SAM end to end, loaded once; missing weights offline -> DiginError."""

from pathlib import Path

import huggingface_hub.constants
import pytest
import torch

from digin_cli.api.builders import preset
from digin_cli.errors import DiginError
from digin_cli.segmentation import build_segmenter
from digin_cli.segmentation.sam import SamSegmenter, tiny_sam

CONF = Path(__file__).resolve().parents[2] / "conf" / "segmentation"


def _blob(size=64, cx=24, cy=36, sigma=8.0):
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    return torch.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * sigma**2))


@pytest.fixture(scope="module")
def tiny_hq_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny-sam-hq")
    model, processor = tiny_sam("sam_hq", seed=0)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


@pytest.mark.parametrize("variant", ["sam_hq", "sam"])
def test_tiny_sam_end_to_end(variant):
    seg = SamSegmenter(variant=variant, tiny=True, num_points=5)
    image = torch.rand(1, 3, 64, 64)
    s_px, s_vae = seg.segment(image, _blob())
    assert s_px.shape == (1, 1, 64, 64) and s_vae.shape == (1, 1, 8, 8)
    assert s_px.dtype == torch.float32 and 0 <= s_px.min() and s_px.max() <= 1 and 0 <= s_vae.min() <= s_vae.max() <= 1
    assert len(seg.last_points) == 1 and seg.last_points[0].shape == (5, 2)
    # Deterministic: same seed, same prompts and masks on a second call.
    again, _ = seg.segment(image, _blob())
    assert torch.equal(s_px, again)


def test_tiny_sam_raw_mask_is_binary_at_original_size():
    seg = SamSegmenter(tiny=True, ops=())
    image = torch.rand(1, 3, 48, 40)  # not square, not the model's size
    s_px, s_vae = seg.segment(image, _blob(size=64)[:48, :40])
    assert s_px.shape == (1, 1, 48, 40) and s_vae.shape == (1, 1, 6, 5)
    assert set(s_px.unique().tolist()) <= {0.0, 1.0}


def test_sam_loaded_once_from_local_folder(tiny_hq_folder, monkeypatch):
    from transformers import SamHQModel

    calls = []
    original = SamHQModel.from_pretrained

    def counting(*args, **kwargs):
        calls.append(args)
        return original(*args, **kwargs)

    monkeypatch.setattr(SamHQModel, "from_pretrained", counting)
    seg = SamSegmenter(pretrained=str(tiny_hq_folder), variant="sam_hq")
    for _ in range(2):
        s_px, _ = seg.segment(torch.rand(1, 3, 64, 64), _blob())
        assert s_px.shape == (1, 1, 64, 64)
    assert len(calls) == 1
    # The folder holds the seeded tiny weights: same as building them directly.
    direct = SamSegmenter(tiny=True)
    for a, b in zip(seg.model.state_dict().values(), direct.model.state_dict().values()):
        assert torch.equal(a, b)


def test_variant_mismatch_names_the_fix(tiny_hq_folder):
    with pytest.raises(DiginError, match="segmentation.variant=sam_hq"):
        SamSegmenter(pretrained=str(tiny_hq_folder), variant="sam")


def test_bad_local_folder(tmp_path):
    with pytest.raises(DiginError, match="segmentation.pretrained="):
        SamSegmenter(pretrained=str(tmp_path), variant="sam_hq")


@pytest.mark.parametrize("stem,model_id", [("sam_hq", "syscv-community/sam-hq-vit-huge"),
                                           ("sam", "facebook/sam-vit-huge")])
def test_missing_weights_offline(stem, model_id, tmp_path, monkeypatch):
    # An empty Hugging Face cache: nothing can come from disk, and HF_HUB_OFFLINE=1 (conftest) keeps the hub away.
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    cfg = preset("segmentation", stem)
    assert cfg.pretrained == model_id
    with pytest.raises(DiginError) as info:
        build_segmenter(cfg, "cpu")
    message = str(info.value)
    assert model_id in message and "HF_HUB_OFFLINE" in message and "segmentation.pretrained=" in message
    assert "\n" not in message


def test_empty_pretrained_and_bad_variant():
    with pytest.raises(DiginError, match="segmentation.pretrained"):
        SamSegmenter(pretrained=None)
    with pytest.raises(DiginError, match="segmentation.variant"):
        SamSegmenter(tiny=True, variant="sam2")
    with pytest.raises(DiginError, match="segmentation.point_sampling"):
        SamSegmenter(tiny=True, point_sampling="random")


def test_points_follow_the_authors_rule_unless_spread_is_asked_for():
    from digin_cli.segmentation.points import sample_points

    score = torch.rand(64, 64)
    default = SamSegmenter(tiny=True, ops=())
    assert default.point_sampling == "authors"
    for seg, sampling in ((default, "authors"), (SamSegmenter(tiny=True, ops=(), point_sampling="spread"), "spread")):
        expected = sample_points(score, 5, 0.35, torch.Generator().manual_seed(0), 0.1, sampling)
        assert torch.equal(seg.points(score, torch.Generator().manual_seed(0)), expected)


def test_hq_call_options_and_empty_mask_fallback(monkeypatch):
    seg = SamSegmenter(tiny=True, ops=())
    seen = {}
    forward = seg.model.forward

    def recording(**kwargs):
        seen.update(kwargs)
        return forward(**kwargs)

    monkeypatch.setattr(seg.model, "forward", recording)
    seg.segment(torch.rand(1, 3, 64, 64), _blob())
    assert seen["multimask_output"] is False and seen["hq_token_only"] is True
    assert seen["input_points"].shape == (1, 1, 5, 2) and (seen["input_labels"] == 1).all()
    # SAM finds nothing -> the thresholded squashed attention map is the foreground.
    monkeypatch.setattr(seg, "sam_mask", lambda image, points: torch.full(image.shape[-2:], -1.0))
    s_px, _ = seg.segment(torch.rand(1, 3, 64, 64), _blob())
    assert s_px[0, 0, 36, 24] == 1 and s_px[0, 0, 0, 63] == 0
