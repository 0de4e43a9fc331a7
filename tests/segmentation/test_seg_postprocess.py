"""Erosion, dilation, blur, op strings and the latent mask, with exact numbers on a small square."""

import math

import pytest
import torch
import torch.nn.functional as F

from digin_cli.errors import DiginError
from digin_cli.segmentation.postprocess import blur, dilate, erode, latent_mask, parse_op, postprocess


def _square(size=16, lo=6, hi=10):
    m = torch.zeros(1, 1, size, size)
    m[..., lo:hi, lo:hi] = 1.0  # 4 x 4 = 16 pixels
    return m


def test_dilate_exact_counts():
    m = _square()
    assert dilate(m, 1).sum() == 16
    assert dilate(m, 3).sum() == 36   # 6 x 6
    assert dilate(m, 5).sum() == 64   # 8 x 8
    d4 = dilate(m, 4)                 # even kernel: out[i] = max(x[i-2 .. i+1]) -> rows/cols 5..11 -> 7 x 7
    assert d4.sum() == 49
    assert d4[0, 0, 5, 5] == 1 and d4[0, 0, 11, 11] == 1 and d4[0, 0, 12, 12] == 0 and d4[0, 0, 4, 4] == 0
    assert dilate(m, 3).shape == m.shape


def test_erode_exact_counts_and_geodesic_border():
    m = _square()
    assert erode(m, 3).sum() == 4     # 2 x 2
    assert erode(m, 5).sum() == 0
    assert erode(torch.ones(1, 1, 8, 8), 5).sum() == 64  # outside the image never erodes
    assert torch.equal(erode(dilate(m, 3), 3), m)        # closing of a square is the square


def test_grey_values_and_any_leading_shape():
    m = torch.zeros(5, 5)
    m[2, 2] = 0.5
    assert dilate(m, 3).shape == (5, 5)
    assert dilate(m, 3).sum() == pytest.approx(4.5)
    assert dilate(m, 3).max() == 0.5


def test_blur_numbers():
    m = torch.zeros(1, 1, 9, 9)
    m[..., 4, 4] = 1.0
    out = blur(m, 3, 1.0)
    side = math.exp(-0.5)
    centre = (1.0 / (1.0 + 2.0 * side)) ** 2
    assert out[0, 0, 4, 4].item() == pytest.approx(centre, rel=1e-5)
    assert out[0, 0, 3, 4].item() == pytest.approx(centre * side, rel=1e-5)
    assert out.sum().item() == pytest.approx(1.0, rel=1e-5)       # mass kept away from the border
    sq = blur(_square(), 5, 2.0)
    assert sq.sum().item() == pytest.approx(16.0, rel=1e-5)
    assert torch.allclose(blur(torch.ones(1, 1, 6, 6), 45, 30.0), torch.ones(1, 1, 6, 6))  # kernel shrunk to fit
    with pytest.raises(ValueError):
        blur(m, 4, 1.0)


def test_parse_op_and_errors():
    assert parse_op("erosion_3") == ("erosion", (3.0,))
    assert parse_op("blur_45_30") == ("blur", (45.0, 30.0))
    for bad in ("erode_3", "dilation", "blur_44_30", "blur_45", "dilation_x", "dilation_0"):
        with pytest.raises(DiginError, match="erosion_SIZE"):
            parse_op(bad)


def test_postprocess_chain_equals_manual_and_scale():
    m = _square(32, 10, 22)
    ops = ("erosion_3", "dilation_4", "blur_5_2")
    manual = blur(dilate(erode(m, 3), 4), 5, 2.0)
    assert torch.allclose(postprocess(m, ops), manual)
    assert torch.equal(postprocess(m, ()), m)
    # scale 0.125 (64 px vs the authors' 512): erosion 3 -> 1, dilation 20 -> 3, blur 45 -> 7 (odd), sigma 30 -> 3.75
    scaled = postprocess(m, ("erosion_3", "dilation_20", "blur_45_30"), scale=0.125)
    assert torch.allclose(scaled, blur(dilate(m, 3), 7, 3.75))


def test_latent_mask_is_area_pool():
    torch.manual_seed(0)
    px = (torch.rand(2, 1, 64, 64) > 0.5).float()
    lat = latent_mask(px, (8, 8))
    assert lat.shape == (2, 1, 8, 8)
    assert torch.allclose(lat, F.avg_pool2d(px, 8))
    assert latent_mask(_square(), (4, 4)).sum() == 1.0  # 16 px / 16 px per cell
    assert latent_mask(px, (64, 64)).shape == px.shape
