import torch

from digin_cli.augment import Cutouts


def test_cutouts_shape_range_and_determinism():
    images = torch.rand(1, 3, 64, 64)
    cut = Cutouts(num=8, power=0.3, noise_sd=0.0)
    a = cut(images, (32, 32), generator=torch.Generator().manual_seed(1))
    b = cut(images, (32, 32), generator=torch.Generator().manual_seed(1))
    assert a.shape == (8, 3, 32, 32)
    assert torch.equal(a, b)
    assert a.min() >= 0 and a.max() <= 1  # pooling of [0,1] pixels stays in [0,1] without noise


def test_zero_cutouts_is_identity_and_noise_has_the_given_scale():
    images = torch.full((1, 3, 32, 32), 0.5)
    assert Cutouts(num=0)(images, (16, 16)) is images
    noisy = Cutouts(num=16, power=1.0, noise_sd=0.1)(images, (16, 16), generator=torch.Generator().manual_seed(0))
    assert abs((noisy - 0.5).std().item() - 0.1) < 0.01


def test_power_below_one_favours_large_crops():
    # A bright 8x8 patch in a corner of a 64x64 image: large crops dilute it, small crops often miss it entirely.
    images = torch.zeros(1, 3, 64, 64)
    images[..., :8, :8] = 1.0
    gen = torch.Generator().manual_seed(0)
    big = Cutouts(num=200, power=0.1, noise_sd=0)(images, (16, 16), generator=gen)
    small = Cutouts(num=200, power=3.0, noise_sd=0)(images, (16, 16), generator=gen)
    contains = lambda crops: (crops.amax(dim=(1, 2, 3)) > 0).float().mean()  # noqa: E731
    assert contains(big) > contains(small)


def test_the_attached_generator_feeds_crops_and_noise_and_a_call_generator_wins():
    images = torch.rand(2, 3, 48, 48)
    gen = torch.Generator().manual_seed(3)
    cut = Cutouts(num=4, power=0.3, noise_sd=0.05, generator=gen)
    first = cut(images, (16, 16))
    gen.manual_seed(3)
    assert torch.equal(cut(images, (16, 16)), first)  # reseeding the generator replays crops and noise
    assert not torch.equal(cut(images, (16, 16)), first)  # ... and it advances
    explicit = cut(images, (16, 16), generator=torch.Generator().manual_seed(3))
    assert torch.equal(explicit, first)


def test_draw_then_apply_in_slices_equals_one_call():
    images = torch.rand(2, 3, 48, 40)
    cut = Cutouts(num=7, power=0.3, noise_sd=0.01)
    whole = cut(images, (16, 16), generator=torch.Generator().manual_seed(3))
    draw = cut.draw((48, 40), 2, (16, 16), generator=torch.Generator().manual_seed(3))
    parts = [cut.apply(images, draw, slice(s, s + 3)) for s in range(0, 7, 3)]
    assert [p.shape[0] for p in parts] == [6, 6, 2]  # views x batch, view-major
    assert torch.equal(torch.cat(parts), whole)


def test_generator_set_on_cutouts_is_used():
    images = torch.rand(1, 3, 32, 32)
    a = Cutouts(4, generator=torch.Generator().manual_seed(9))(images, (8, 8))
    b = Cutouts(4)(images, (8, 8), generator=torch.Generator().manual_seed(9))
    assert torch.equal(a, b)
