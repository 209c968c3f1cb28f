"""Where the network looked (Grad-CAM), and the tutorial's four steps computed for one photo.

Grad-CAM weighs each feature map of the last convolutional layer by how much the class score
rises with it (the gradient, averaged over the map), sums them and keeps the positive part:
a coarse map of the regions that speak for the class.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from .atomic import make_parent
from .errors import UserError
from .images import ImageError, load_pixels
from .models import SeedNet, probabilities, to_input


@dataclass
class GradCam:
    heatmap: np.ndarray  # (size, size) in [0, 1], over the network's input
    class_index: int
    probabilities: np.ndarray
    layer: str


def last_feature_layer(model: torch.nn.Module, size: int) -> str:
    """The name of the module whose output is the last spatial feature map of a forward pass."""
    found: list[str] = []
    hooks = []
    for name, module in model.named_modules():
        if name and not list(module.children()):

            def record(mod, args, out, name=name):
                if isinstance(out, torch.Tensor) and out.dim() == 4 and out.shape[-1] > 1 and out.shape[-2] > 1:
                    found.append(name)

            hooks.append(module.register_forward_hook(record))
    try:
        with torch.inference_mode():
            model(torch.zeros(1, 3, size, size))
    finally:
        for h in hooks:
            h.remove()
    if not found:
        raise UserError("this network has no spatial feature map to explain")
    return found[-1]


def _class_score(model, logits: torch.Tensor, k: int) -> torch.Tensor:
    if getattr(model, "binary", False):  # one sigmoid logit z: class 1 scores z, class 0 scores -z
        return logits[0, 0] if k == 1 else -logits[0, 0]
    return logits[0, k]


def grad_cam(clf, pixels: np.ndarray, class_name: str | None = None, layer: str | None = None) -> GradCam:
    """Grad-CAM of uint8 pixels (from `load_pixels`) for the predicted class or `class_name`;
    `clf` is a `Classifier` (its `grad_cam` method calls this)."""
    model = clf.model
    size = clf.preprocessing.size
    layer = layer or last_feature_layer(model, size)
    modules = dict(model.named_modules())
    if layer not in modules:
        raise UserError(f"no layer named {layer!r}; layers: {', '.join(n for n in modules if n)}")
    if class_name is not None and class_name not in clf.classes:
        raise UserError(f"no class {class_name!r}; the model's classes are {', '.join(clf.classes)}")
    calls: list[dict[str, torch.Tensor]] = []

    def keep(mod, args, out):
        # A module may run more than once (a shared activation): the last call is the one that counts.
        call = {"act": out}
        out.register_hook(lambda g: call.__setitem__("grad", g))
        calls.append(call)

    hook = modules[layer].register_forward_hook(keep)
    try:
        with torch.enable_grad():
            logits = model(to_input(pixels[None]))
            probs = probabilities(model, logits.detach() / clf.temperature)[0].numpy()
            k = int(probs.argmax()) if class_name is None else clf.classes.index(class_name)
            _class_score(model, logits, k).backward()
    finally:
        hook.remove()
    act, grad = calls[-1]["act"].detach(), calls[-1]["grad"]
    cam = F.relu((grad.mean((2, 3), keepdim=True) * act).sum(1, keepdim=True))
    cam = F.interpolate(cam, size=(size, size), mode="bilinear", align_corners=False)[0, 0]
    cam = cam / cam.max() if cam.max() > 0 else cam
    return GradCam(cam.numpy(), k, probs, layer)


def overlay(pixels: np.ndarray, heatmap: np.ndarray) -> np.ndarray:
    """The photo under a jet-coloured heatmap, blended as the explain figure draws it."""
    from matplotlib import colormaps

    h = (
        np.asarray(Image.fromarray((heatmap * 255).astype(np.uint8)).resize(pixels.shape[1::-1], Image.BILINEAR))
        / 255.0
    )
    colour = colormaps["jet"](h)[..., :3] * 255
    return (pixels * 0.55 + colour * 0.45).astype(np.uint8)


def seed_steps(model: SeedNet, pixels: np.ndarray, temperature: float = 1.0) -> dict[str, np.ndarray]:
    """Each of the tutorial's steps for one photo, with this model's learned weights; the output
    with the model's calibration `temperature`, so that it says what `predict` says.

    Computed in the tutorial's order (ReLU before pooling); the network's own forward pass pools
    first, which gives the same numbers.
    """
    with torch.inference_mode():
        x = model.rescale(to_input(pixels[None]))
        conv1 = F.relu(model.conv1(x))
        pool1 = model.pool1(conv1)
        conv2 = F.relu(model.conv2(pool1))
        pool2 = model.pool2(conv2)
        flat = model.flatten(pool2)
        dense = F.relu(model.dense(flat))
        out = torch.sigmoid(model.output(dense) / temperature)
    return {
        "input": pixels,
        "detectors": model.conv1.weight.detach().numpy(),
        "conv1": conv1[0].numpy(),
        "pool1": pool1[0].numpy(),
        "conv2": conv2[0].numpy(),
        "pool2": pool2[0].numpy(),
        "flatten": flat[0].numpy(),
        "dense": dense[0].numpy(),
        "output": out[0].numpy(),
        "probabilities": [1 - float(out[0, 0]), float(out[0, 0])],
    }


def block_steps(model: torch.nn.Module, pixels: np.ndarray, temperature: float = 1.0) -> dict[str, np.ndarray]:
    """For deep networks: the input, the first block's feature maps and the last block's, and the
    output with the model's calibration `temperature`."""
    size = pixels.shape[0]
    maps: dict[str, torch.Tensor] = {}
    last_name = last_feature_layer(model, size)
    first_conv = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d))
    hooks = [
        first_conv.register_forward_hook(lambda m, a, out: maps.setdefault("first", out)),
        dict(model.named_modules())[last_name].register_forward_hook(lambda m, a, out: maps.__setitem__("last", out)),
    ]
    try:
        with torch.inference_mode():
            logits = model(to_input(pixels[None]))
    finally:
        for h in hooks:
            h.remove()
    p = probabilities(model, logits / temperature)[0]
    return {
        "input": pixels,
        "first": maps["first"][0].numpy(),
        "last": maps["last"][0].numpy(),
        "output": p.numpy(),
        "probabilities": p.tolist(),
        "last_name": last_name,
    }


def default_figure(image, steps: bool = False) -> Path:
    """Where `pawnet explain` draws when not told: runs/explain/, named after the photo."""
    return Path("runs", "explain", f"{Path(image).stem}_{'steps' if steps else 'gradcam'}.png")


def explain_figure(
    clf, image, out=None, steps: bool = False, class_name: str | None = None, layer: str | None = None
) -> dict:
    """Draw where `clf` looked for its label of `image` (Grad-CAM), or with `steps` the photo's way
    through the tutorial's steps, into the PNG `out` (default: runs/explain/IMAGE-name_gradcam.png
    or _steps.png; folders are made). Returns what was drawn: label, probabilities, figure."""
    from .plots import block_steps_figure, gradcam_figure, seed_steps_figure

    if not clf.explainable:
        raise UserError(f"{clf.path}: explain needs a model directory (it follows gradients through PyTorch)")
    try:
        pixels = load_pixels(image, clf.preprocessing)
    except ImageError as e:
        raise UserError(f"{image}: {e}") from None
    out = make_parent(out or default_figure(image, steps))
    if out.suffix.lower() != ".png":
        raise UserError(f"{out}: explain draws a PNG; name the file .png")
    summary = {"image": str(image)}
    if steps:
        if isinstance(clf.model, SeedNet):
            drawn = seed_steps(clf.model, pixels, clf.temperature)
            seed_steps_figure(drawn, clf.classes, out)
        else:
            drawn = block_steps(clf.model, pixels, clf.temperature)
            block_steps_figure(drawn, clf.classes, out)
        probs = drawn["probabilities"]
        k = int(np.argmax(probs))
        return {
            **summary,
            "label": clf.classes[k],
            "probability": probs[k],
            "probabilities": dict(zip(clf.classes, probs)),
            "figure": str(out),
        }
    cam = clf.grad_cam(pixels, class_name, layer)
    k = int(cam.probabilities.argmax())
    explained = clf.classes[cam.class_index]
    title = f"{Path(image).name}: {clf.classes[k]} {cam.probabilities[k]:.2f}"
    if explained != clf.classes[k]:
        title += f"; showing evidence for {explained}"
    gradcam_figure(pixels, cam.heatmap, title, out)
    return {
        **summary,
        "label": clf.classes[k],
        "probability": float(cam.probabilities[k]),
        "probabilities": dict(zip(clf.classes, map(float, cam.probabilities))),
        "explained_class": explained,
        "layer": cam.layer,
        "heatmap": str(out),
    }
