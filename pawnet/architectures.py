"""The architectures `--arch` names: each one entry holding everything pawnet knows of it.

An entry is the network class, the recipe it trains with by default, whether it trains whole or
as a head on the frozen features of a pretrained body, and where its pretrained weights come
from. Adding an architecture is adding an entry here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch.nn as nn

from . import augment
from .images import Preprocessing
from .models import EfficientNetLite0, SeedNet, SmallNet, SmallNet1, SmallNet2, imagenet_weights


@dataclass(frozen=True)
class Recipe:
    """How an architecture is trained by default. A run can change `epochs`, `batch_size` and
    the preprocessing's `size` (`RunSettings`); the rest is the architecture's."""

    preprocessing: Preprocessing
    augmentation: augment.Augmentation
    epochs: int
    batch_size: int
    optimizer: str = "adam"
    lr: float = 1e-3
    weight_decay: float = 0.0
    eps: float = 1e-8
    schedule: str = "constant"  # or "onecycle": warm up, then anneal to zero
    label_smoothing: float = 0.0
    # "all" trains every weight on augmented photos; "head" freezes a pretrained body, computes
    # its features once (each photo and its mirror image) and trains only the dense head on them.
    train: str = "all"


@dataclass(frozen=True)
class Architecture:
    network: Callable[..., nn.Module]
    recipe: Recipe
    # The pretrained body's weights, for networks that have them; a head-only model directory
    # stores just the head and takes its body from here.
    pretrained: Callable[[], dict] | None = None
    # The tutorial's network ends in one sigmoid unit: it tells two classes apart, no more.
    two_classes_only: bool = False
    # For a pretrained network, the recipe that trains every weight (`--finetune`): slower than a
    # head on frozen features, for users with a GPU or time.
    finetune: Recipe | None = None
    # Earlier layouts of the network by revision (config.json's "network_revision"), so that the
    # models trained with them still load.
    earlier: dict[int, Callable[..., nn.Module]] = field(default_factory=dict)


ARCHITECTURES: dict[str, Architecture] = {
    # The tutorial: 64x64 photos scaled to [0, 1], its augmentation, Adam with Keras's
    # epsilon (1e-7), batch 32, 25 epochs.
    "seed": Architecture(
        SeedNet,
        Recipe(Preprocessing(size=64), augment.TUTORIAL, epochs=25, batch_size=32, eps=1e-7),
        two_classes_only=True,
    ),
    "small": Architecture(
        SmallNet,
        Recipe(
            Preprocessing(size=96, mean=(124.0, 116.0, 104.0), std=(58.0, 57.0, 57.0)),
            augment.Augmentation(
                zoom=(0.75, 1.15),
                translate=0.1,
                rotate_deg=10,
                hflip=True,
                brightness=0.25,
                contrast=0.25,
                saturation=0.25,
            ),
            epochs=50,
            batch_size=64,
            optimizer="adamw",
            lr=3e-3,
            weight_decay=0.05,
            schedule="onecycle",
            label_smoothing=0.1,
        ),
        earlier={1: SmallNet1, 2: SmallNet2},
    ),
    # Chosen by measuring on the shared photos (benchmarks/README.md): a head on 256 px features.
    "efficientnet_lite0": Architecture(
        EfficientNetLite0,
        Recipe(
            Preprocessing(size=256, **EfficientNetLite0.pretrained_input),
            augment.Augmentation(hflip=True),
            epochs=60,
            batch_size=64,
            optimizer="adamw",
            lr=1e-3,
            weight_decay=1.0,
            label_smoothing=0.1,
            train="head",
        ),
        pretrained=imagenet_weights,
        finetune=Recipe(
            Preprocessing(size=224, **EfficientNetLite0.pretrained_input),
            augment.Augmentation(zoom=(0.8, 1.1), translate=0.05, hflip=True),
            epochs=4,
            batch_size=32,
            optimizer="adamw",
            lr=3e-4,
            weight_decay=0.05,
            schedule="onecycle",
            label_smoothing=0.1,
        ),
    ),
}


def build(
    arch: str, n_classes: int, prep: Preprocessing, pretrained: bool = False, revision: int | None = None
) -> nn.Module:
    """A new network of `arch` for `n_classes` and `prep`'s input; with `pretrained`, its body
    holds the pretrained weights (where the architecture has them). `revision` picks an earlier
    layout of the network, for a model trained with it."""
    entry = ARCHITECTURES[arch]
    network = entry.earlier.get(revision, entry.network)
    model = network(n_classes=n_classes, size=prep.size, mean=prep.mean, std=prep.std)
    if pretrained and entry.pretrained is not None:
        model.load_pretrained(entry.pretrained())
    return model
