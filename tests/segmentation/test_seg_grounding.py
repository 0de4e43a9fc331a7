"""GroundingDINO + SAM on tiny random configs: boxes -> masks -> fraction; no detection -> r = 0; offline errors."""

from pathlib import Path

import huggingface_hub.constants
import pytest
import torch
from omegaconf import OmegaConf

from digin_cli.api.builders import preset
from digin_cli.errors import DiginError
from digin_cli.segmentation import build_segmenter
from digin_cli.segmentation.grounding import (
    GroundedSam,
    object_fractions,
    phrase,
    tiny_grounding_dino,
)
from digin_cli.segmentation.sam import tiny_sam

CONF = Path(__file__).resolve().parents[2] / "conf" / "segmentation"


@pytest.fixture(scope="module")
def tiny_gsam():
    return build_segmenter(preset("segmentation", "tiny_grounded_sam"), "cpu")


@pytest.fixture(scope="module")
def images():
    return torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))


@pytest.fixture(scope="module")
def tiny_folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny-grounded-sam")
    for sub, (model, processor) in (("dino", tiny_grounding_dino(seed=0)), ("sam", tiny_sam("sam_hq", seed=0))):
        model.save_pretrained(root / sub)
        processor.save_pretrained(root / sub)
    return root


def test_boxes_masks_fraction(tiny_gsam, images, monkeypatch):
    monkeypatch.setattr(tiny_gsam, "threshold", 0.0)  # the random detector's scores are all > 0: every query kept
    out = tiny_gsam.segment_text(images, "tench")
    assert out.masks.shape == (2, 1, 64, 64) and set(out.masks.unique().tolist()) <= {0.0, 1.0}
    assert out.detected == [True, True] and all(len(b) == tiny_gsam.model.config.num_queries for b in out.boxes)
    for boxes in out.boxes:  # xyxy pixels inside the image
        assert (boxes[:, 0] <= boxes[:, 2]).all() and (boxes[:, 1] <= boxes[:, 3]).all()
        assert boxes.min() >= 0 and boxes.max() <= 64
    assert out.fractions == pytest.approx([float(m.mean()) for m in out.masks])
    assert any(0.0 < r < 1.0 for r in out.fractions)
    # The union mask is SAM's per-box masks OR-ed: one call per box gives the same pixels.
    single = [(tiny_gsam.sam.sam_mask(images[0], boxes=b[None]) > 0) for b in out.boxes[0]]
    assert torch.equal(torch.stack(single).any(0).float(), out.masks[0, 0])
    # Deterministic: the same images give the same result.
    assert torch.equal(tiny_gsam.segment_text(images, "tench").masks, out.masks)


def test_threshold_selects_boxes_by_score(tiny_gsam, images, monkeypatch):
    monkeypatch.setattr(tiny_gsam, "threshold", 0.0)
    boxes, scores = tiny_gsam.detect(images[:1], "tench")
    cut = float(scores[0].median())
    monkeypatch.setattr(tiny_gsam, "threshold", cut)
    kept, kept_scores = tiny_gsam.detect(images[:1], "tench")
    assert torch.equal(kept_scores[0], scores[0][scores[0] > cut]) and torch.equal(kept[0], boxes[0][scores[0] > cut])


def test_no_detection_gives_r_zero(tiny_gsam, images, monkeypatch):
    monkeypatch.setattr(tiny_gsam, "threshold", 1.0)  # a sigmoid score is never > 1
    out = tiny_gsam.segment_text(images, "goldfish")
    assert out.detected == [False, False] and out.fractions == [0.0, 0.0] and out.masks.sum() == 0


def test_planted_boxes_known_fraction(images, monkeypatch):
    seg = GroundedSam(tiny=True, masks="boxes")
    assert seg.sam is None
    planted = [torch.tensor([[0.0, 0.0, 32.0, 32.0], [16.0, 16.0, 48.0, 48.0]]), torch.zeros(0, 4)]
    monkeypatch.setattr(seg, "detect", lambda imgs, text: (planted, [torch.ones(2), torch.ones(0)]))
    out = seg.segment_text(images, "tench")
    # 32x32 + 32x32 - 16x16 overlap = 1792 of 4096 pixels; no box -> 0.
    assert out.fractions == [1792 / 4096, 0.0] and out.detected == [True, False]
    assert out.masks[0, 0, 40, 40] == 1 and out.masks[0, 0, 40, 10] == 0


def test_object_fractions_hand_computed():
    masks = torch.zeros(3, 1, 4, 4)
    masks[0, 0, :2] = 1  # half
    masks[1] = 1
    assert object_fractions(masks) == [0.5, 1.0, 0.0]


def test_phrase_form():
    assert phrase("Great White_shark") == "great white shark."
    assert phrase("tench.") == "tench."
    with pytest.raises(DiginError, match="empty"):
        phrase("  ")


def test_loaded_once_from_local_folders(tiny_folders, tiny_gsam, images, monkeypatch):
    from transformers import GroundingDinoForObjectDetection, SamHQModel

    calls = []
    for cls in (GroundingDinoForObjectDetection, SamHQModel):
        original = cls.from_pretrained
        monkeypatch.setattr(cls, "from_pretrained",
                            lambda *a, _o=original, _c=cls, **k: calls.append(_c.__name__) or _o(*a, **k))
    seg = GroundedSam(detector=str(tiny_folders / "dino"), pretrained=str(tiny_folders / "sam"), threshold=0.0)
    first = seg.segment_text(images, "tench")
    seg.segment_text(images, "tench")
    assert sorted(calls) == ["GroundingDinoForObjectDetection", "SamHQModel"]
    # The folders hold the seeded tiny weights and tokenizer: the same masks as the tiny build.
    monkeypatch.setattr(tiny_gsam, "threshold", 0.0)
    assert torch.equal(first.masks, tiny_gsam.segment_text(images, "tench").masks)


def _empty_hub(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))


def test_missing_detector_weights_offline(tmp_path, monkeypatch):
    _empty_hub(tmp_path, monkeypatch)
    cfg = preset("segmentation", "grounded_sam")
    with pytest.raises(DiginError) as info:
        build_segmenter(cfg, "cpu")
    message = str(info.value)
    assert "IDEA-Research/grounding-dino-base" in message and "HF_HUB_OFFLINE" in message
    assert "segmentation.detector=" in message and "\n" not in message


def test_missing_sam_weights_offline(tiny_folders, tmp_path, monkeypatch):
    _empty_hub(tmp_path, monkeypatch)
    cfg = OmegaConf.merge(preset("segmentation", "grounded_sam"), {"detector": str(tiny_folders / "dino")})
    with pytest.raises(DiginError) as info:
        build_segmenter(cfg, "cpu")
    message = str(info.value)
    assert "syscv-community/sam-hq-vit-huge" in message and "HF_HUB_OFFLINE" in message
    assert "segmentation.pretrained=" in message


def test_wrong_checkpoint_and_bad_values(tiny_folders):
    with pytest.raises(DiginError, match="segmentation.detector="):
        GroundedSam(detector=str(tiny_folders / "sam"), masks="boxes")  # a SAM folder is not GroundingDINO
    with pytest.raises(DiginError, match="segmentation.detector is empty"):
        GroundedSam(detector=None)
    with pytest.raises(DiginError, match=r"segmentation.threshold must be in \[0, 1\]"):
        GroundedSam(tiny=True, threshold=1.5)
    with pytest.raises(DiginError, match="segmentation.masks"):
        GroundedSam(tiny=True, masks="polygons")
