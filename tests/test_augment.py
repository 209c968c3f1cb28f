"""Batched augmentation: Keras's conventions, reproducible, one warp per batch."""

import torch

from pawnet.augment import NONE, TUTORIAL, Augmentation


def square_batch(n=4, size=32):
    x = torch.zeros(n, 3, size, size)
    x[:, :, 8:24, 8:24] = 255.0
    return x


def test_same_seed_same_augmentation():
    x = torch.rand(8, 3, 32, 32) * 255
    a = TUTORIAL(x, torch.Generator().manual_seed(1))
    b = TUTORIAL(x, torch.Generator().manual_seed(1))
    c = TUTORIAL(x, torch.Generator().manual_seed(2))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_no_augmentation_is_identity():
    x = torch.rand(2, 3, 16, 16)
    assert NONE(x) is x


def test_flip_only_mirrors():
    x = torch.arange(16.0).view(1, 1, 1, 16).expand(64, 3, 16, 16).contiguous()
    y = Augmentation(hflip=True)(x, torch.Generator().manual_seed(0))
    mirrored = ((y - x.flip(3)).abs() < 1e-3).flatten(1).all(1)
    same = ((y - x).abs() < 1e-3).flatten(1).all(1)
    assert (mirrored | same).all() and mirrored.any() and same.any()


def test_zoom_above_one_shows_more_of_the_photo_as_keras_does():
    x = square_batch()
    out = Augmentation(zoom=(2.0, 2.0))(x)
    # The 16-pixel white square shrinks to about 8 pixels.
    assert abs((out[0, 0] > 127).sum().item() - 64) < 20


def test_tutorial_preset_is_keras_parameters():
    assert TUTORIAL.shear_deg == 0.2 and TUTORIAL.zoom == (0.8, 1.2)
    assert TUTORIAL.zoom_xy_independent and TUTORIAL.hflip
    assert Augmentation.from_dict(TUTORIAL.to_dict()) == TUTORIAL


def test_colour_jitter_stays_in_pixel_range():
    x = torch.rand(16, 3, 8, 8) * 255
    y = Augmentation(brightness=0.5, contrast=0.5, saturation=0.5)(x, torch.Generator().manual_seed(0))
    assert y.shape == x.shape and y.min() >= 0 and y.max() <= 255 and not torch.equal(x, y)
