"""The networks pawnet trains, each registered under the name `--arch` takes.

Every network takes a float batch of 0-255 RGB pixels, (N, 3, size, size), and normalises it
itself, so the normalisation travels with the weights (into ONNX too) and cannot be forgotten.
It returns logits: one per image for a sigmoid (binary) network, one per class otherwise.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F


class Rescale(nn.Module):
    """(pixel - mean) / std per channel, as Keras's `rescale=1/255` with mean 0 and std 255."""

    def __init__(self, mean, std):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)

    def forward(self, x):
        return (x - self.mean) / self.std


class SeedNet(nn.Module):
    """The tutorial's network, layer for layer, on 64x64 photos.

    Conv2D(32, 3x3) + ReLU -> MaxPool 2x2 -> Conv2D(32, 3x3) + ReLU -> MaxPool 2x2 -> Flatten
    -> Dense(128) + ReLU -> Dense(1) + sigmoid.
    """

    binary = True

    def __init__(self, n_classes: int = 2, size: int = 64, mean=(0, 0, 0), std=(255, 255, 255)):
        super().__init__()
        if n_classes != 2:
            raise ValueError("the seed network is the tutorial's binary classifier; use --arch small for more classes")
        self.rescale = Rescale(mean, std)
        # Step 1 - convolution: 32 learned 3x3 feature detectors slide over the image.
        self.conv1 = nn.Conv2d(3, 32, kernel_size=3)
        # Step 2 - max pooling: keep the strongest response in each 2x2 window.
        self.pool1 = nn.MaxPool2d(2)
        # Steps 1 and 2 again, on the first block's feature maps.
        self.conv2 = nn.Conv2d(32, 32, kernel_size=3)
        self.pool2 = nn.MaxPool2d(2)
        # Step 3 - flattening: the pooled maps become one vector.
        self.flatten = nn.Flatten()
        side = ((size - 2) // 2 - 2) // 2
        # Step 4 - full connection: a hidden dense layer, then one output unit whose sigmoid
        # is the probability of the second class.
        self.dense = nn.Linear(32 * side * side, 128)
        self.output = nn.Linear(128, 1)
        _keras_init(self)

    def forward(self, x):
        x = self.rescale(x)
        # ReLU and 2x2 max pooling commute (ReLU never changes which value is largest), so
        # pooling first computes the same function with a quarter of the ReLU work.
        x = F.relu(self.pool1(self.conv1(x)))
        x = F.relu(self.pool2(self.conv2(x)))
        x = self.flatten(x)
        x = F.relu(self.dense(x))
        return self.output(x)


def _keras_init(module: nn.Module) -> None:
    """Keras's defaults: Glorot-uniform weights and zero biases."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.xavier_uniform_(m.weight)
            nn.init.zeros_(m.bias)


ARCHITECTURES: dict[str, Callable[..., nn.Module]] = {
    "seed": SeedNet,
}


def build(arch: str, n_classes: int, size: int, mean, std) -> nn.Module:
    return ARCHITECTURES[arch](n_classes=n_classes, size=size, mean=mean, std=std)


def probabilities(model: nn.Module, logits: torch.Tensor) -> torch.Tensor:
    """One probability per class, whatever the network's head."""
    if getattr(model, "binary", False):
        p = torch.sigmoid(logits[:, 0])
        return torch.stack([1 - p, p], 1)
    return torch.softmax(logits, 1)


def loss_fn(model: nn.Module, logits: torch.Tensor, labels: torch.Tensor, weight=None, label_smoothing=0.0):
    """Mean loss over the batch: binary cross-entropy for sigmoid networks, cross-entropy otherwise."""
    if getattr(model, "binary", False):
        loss = F.binary_cross_entropy_with_logits(logits[:, 0], labels.float(), reduction="none")
        if weight is None:
            return loss.mean()
        w = weight[labels]
        return (loss * w).sum() / w.sum()
    return F.cross_entropy(logits, labels, weight=weight, label_smoothing=label_smoothing)
