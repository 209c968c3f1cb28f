"""Augmentation of whole batches of tensors: one affine warp and one colour jitter per batch.

Per-image augmentation in Python costs more than the seed network's training step on a CPU; here a
batch of N images gets N random affine matrices and a single `grid_sample`, reproducible under a
seeded `torch.Generator`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class Augmentation:
    """Random changes made to training images; saved in config.json.

    Geometry follows Keras's ImageDataGenerator: `shear_deg` is in degrees; x and y zoom factors
    are drawn from `zoom` (independently when `zoom_xy_independent`, as Keras does), where a factor
    above 1 shows more of the photo; pixels from outside the photo repeat its edge ("nearest").
    `translate` is the largest shift as a fraction of the side; the colour factors are drawn
    from [1 - v, 1 + v].
    """

    shear_deg: float = 0.0
    zoom: tuple[float, float] = (1.0, 1.0)
    zoom_xy_independent: bool = True
    translate: float = 0.0
    rotate_deg: float = 0.0
    hflip: bool = False
    brightness: float = 0.0
    contrast: float = 0.0
    saturation: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> Augmentation:
        d = dict(d)
        if "zoom" in d:
            d["zoom"] = tuple(d["zoom"])
        return cls(**d)

    @property
    def geometric(self) -> bool:
        return bool(self.shear_deg or self.zoom != (1.0, 1.0) or self.translate or self.rotate_deg or self.hflip)

    def __call__(
        self,
        x: torch.Tensor,
        generator: torch.Generator | None = None,
        draw: int | None = None,
        rows: slice = slice(None),
    ) -> torch.Tensor:
        """Augment a float batch (N, 3, H, W) of 0-255 pixels on any device.

        The random factors come from `generator` on the CPU, drawn for `draw` images (default N),
        of which `rows` are this batch's: processes sharing a global batch draw the same factors
        and each applies its own part, as one process would to the whole batch.
        """
        n = draw or len(x)

        def uniform(lo, hi):
            return (torch.rand(n, generator=generator) * (hi - lo) + lo)[rows].to(x.device)

        if self.geometric:
            x = self._warp(x, uniform)
        if self.brightness or self.contrast or self.saturation:
            x = self._jitter(x, uniform)
        return x

    def _warp(self, x, uniform):
        zx = uniform(*self.zoom)
        zy = uniform(*self.zoom) if self.zoom_xy_independent else zx
        shear = torch.deg2rad(uniform(-self.shear_deg, self.shear_deg))
        angle = torch.deg2rad(uniform(-self.rotate_deg, self.rotate_deg))
        tx = uniform(-self.translate, self.translate) * 2
        ty = uniform(-self.translate, self.translate) * 2
        flip = torch.where(uniform(0, 1) < 0.5, -1.0, 1.0) if self.hflip else torch.ones(len(x), device=x.device)

        cos, sin = torch.cos(angle), torch.sin(angle)
        # theta maps each output pixel to where it is read from in the input, in [-1, 1] coordinates:
        # zoom @ shear @ rotation, then the flip mirrors the output.
        a = zx * (cos - torch.sin(shear) * sin)
        b = zx * (-sin - torch.sin(shear) * cos)
        c = zy * torch.cos(shear) * sin
        d = zy * torch.cos(shear) * cos
        theta = torch.stack([torch.stack([a * flip, b, tx], 1), torch.stack([c * flip, d, ty], 1)], 1).to(x.dtype)
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)

    def _jitter(self, x, uniform):
        shape = (len(x), 1, 1, 1)
        if self.brightness:
            x = x * uniform(1 - self.brightness, 1 + self.brightness).view(shape)
        if self.contrast:
            mean = _gray(x).mean((2, 3), keepdim=True)
            x = (x - mean) * uniform(1 - self.contrast, 1 + self.contrast).view(shape) + mean
        if self.saturation:
            gray = _gray(x)
            x = (x - gray) * uniform(1 - self.saturation, 1 + self.saturation).view(shape) + gray
        return x.clamp(0, 255)


def _gray(x: torch.Tensor) -> torch.Tensor:
    return (x * torch.tensor([0.299, 0.587, 0.114], dtype=x.dtype, device=x.device).view(1, 3, 1, 1)).sum(
        1, keepdim=True
    )


NONE = Augmentation()
# The tutorial's ImageDataGenerator(shear_range=0.2, zoom_range=0.2, horizontal_flip=True).
TUTORIAL = Augmentation(shear_deg=0.2, zoom=(0.8, 1.2), hflip=True)
