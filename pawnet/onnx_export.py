"""`pawnet export MODEL --format onnx`: a portable model, checked against PyTorch as it is made."""

from __future__ import annotations

import contextlib
import json
import logging
import warnings
from pathlib import Path

import numpy as np
import torch

from .atomic import make_parent
from .classifier import Classifier
from .loader import DEFAULT_MODEL, resolve
from .models import probabilities
from .onnx_model import CONFIG_KEY, INPUT, OUTPUT, OnnxClassifier
from .rundir import RunDir

PARITY_TOLERANCE = 1e-4


class _WithProbabilities(torch.nn.Module):
    """The network with its sigmoid or softmax, so an ONNX user gets probabilities directly."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, pixels):
        return probabilities(self.model, self.model(pixels))


def export(model_dir, out=None, quantize: bool = False, check=None, log=print) -> dict:
    """Export a model directory to ONNX and return what was checked.

    The batch axis is dynamic. Parity: on batches of 1 and 7 (random pixels), the largest
    difference between onnxruntime's and PyTorch's probabilities must stay under 1e-4.
    With `quantize`, weights are stored as int8 (onnxruntime dynamic quantization), and `check`,
    a labelled folder, measures what that costs in accuracy.
    """
    clf = Classifier.load(resolve(model_dir))
    out = make_parent(output_path(model_dir, out, quantize))
    size = clf.preprocessing.size
    wrapper = _WithProbabilities(clf.model.to(memory_format=torch.contiguous_format)).eval()
    example = torch.rand(2, 3, size, size) * 255
    batch = torch.export.Dim("batch", min=1, max=4096)
    with _exporter_quiet():
        onnx_program = torch.onnx.export(
            wrapper,
            (example,),
            dynamo=True,
            verbose=False,
            input_names=[INPUT],
            output_names=[OUTPUT],
            dynamic_shapes={"pixels": {0: batch}},
        )
        onnx_program.optimize()
        onnx_program.save(str(out))
    _store_config(out, {**clf.config, "exported_from": str(model_dir)})
    if not _batch_axis_is_dynamic(out):
        raise RuntimeError(f"{out}: the exporter fixed the batch size; the file would accept one batch size only")

    exported = OnnxClassifier.load(out)
    generator = torch.Generator().manual_seed(0)
    worst = 0.0
    for n in (1, 7):
        pixels = (torch.rand(n, size, size, 3, generator=generator) * 255).to(torch.uint8).numpy()
        worst = max(worst, float(np.abs(exported.probabilities(pixels) - clf.probabilities(pixels)).max()))
    report = {"onnx": str(out), "max_probability_difference": worst, "bytes": out.stat().st_size}
    log(
        f"exported {out} ({out.stat().st_size / 1e6:.2f} MB); "
        f"largest probability difference from PyTorch on batches of 1 and 7: {worst:.2e}"
    )
    if worst >= PARITY_TOLERANCE:
        raise RuntimeError(f"the ONNX model differs from PyTorch by {worst:.2e} (limit {PARITY_TOLERANCE:.0e})")

    if quantize:
        report.update(_quantize(out, clf, check, log))
    return report


def output_path(model_dir, out=None, quantize: bool = False) -> Path:
    """`out`, else model.onnx (model.int8.onnx) in the model directory; for the model shipped
    with pawnet, whose folder is the package's, runs/export/default.onnx (default.int8.onnx)."""
    if out is not None:
        return Path(out)
    if resolve(model_dir) == DEFAULT_MODEL:
        return Path("runs", "export", "default.int8.onnx" if quantize else "default.onnx")
    return RunDir(model_dir).onnx(quantized=quantize)


class _DropMessages(logging.Filter):
    def __init__(self, *starts: str):
        super().__init__()
        self.starts = starts

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.starts)


@contextlib.contextmanager
def _exporter_quiet():
    """The exporter's and quantizer's notes that are not the user's business, and only those:
    torchvision's operators it skips (pawnet uses none), a deprecation inside PyTorch's own
    pytree code, and onnxruntime's advice to pre-process a model before quantizing it."""
    registration = logging.getLogger("torch.onnx._internal.exporter._registration")
    drop = _DropMessages("torchvision is not installed", "Please consider to run pre-processing")
    registration.addFilter(drop)
    logging.getLogger().addFilter(drop)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=FutureWarning, message=r".*LeafSpec.*is deprecated")
            yield
    finally:
        registration.removeFilter(drop)
        logging.getLogger().removeFilter(drop)


def _store_config(path: Path, config: dict) -> None:
    import onnx

    model = onnx.load(str(path))
    entry = model.metadata_props.add()
    entry.key, entry.value = CONFIG_KEY, json.dumps(config)
    onnx.save(model, str(path))


def _batch_axis_is_dynamic(path: Path) -> bool:
    import onnx

    dim = onnx.load(str(path)).graph.input[0].type.tensor_type.shape.dim[0]
    return bool(dim.dim_param) and not dim.HasField("dim_value")


def _quantize(path: Path, clf: Classifier, check, log) -> dict:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    float_path = path.with_name(path.stem + ".fp32.onnx")
    _without_weight_shapes(path, float_path)
    path.unlink()
    with _exporter_quiet():
        quantize_dynamic(str(float_path), str(path), weight_type=QuantType.QInt8)
    float_path.unlink()
    report = {"quantized": True, "bytes": path.stat().st_size}
    log(f"quantized to int8: {path} ({path.stat().st_size / 1e6:.2f} MB)")
    if check is not None:
        before = clf.evaluate(check)["accuracy"]
        after = OnnxClassifier.load(path).evaluate(check)["accuracy"]
        report.update({"accuracy_float": before, "accuracy_int8": after})
        log(f"accuracy on {check}: {before:.4f} in float32, {after:.4f} in int8 ({(after - before) * 100:+.2f} points)")
    else:
        log("pass --check DATA to measure what int8 costs in accuracy")
    return report


def _without_weight_shapes(path: Path, out: Path) -> None:
    """The model with no shape annotations on its weights. The exporter annotates them, and
    onnxruntime's quantizer (1.30, for one) transposes a Gemm's weight without updating its
    annotation, then fails its own shape check on the mismatch. The shapes are in the weights."""
    import onnx

    model = onnx.load(str(path))
    weights = {w.name for w in model.graph.initializer}
    kept = [v for v in model.graph.value_info if v.name not in weights]
    del model.graph.value_info[:]
    model.graph.value_info.extend(kept)
    onnx.save(model, str(out))
