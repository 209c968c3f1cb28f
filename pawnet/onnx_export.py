"""`pawnet export MODEL --format onnx`: a portable model, checked against PyTorch as it is made."""

from __future__ import annotations

import contextlib
import inspect
import json
import logging
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch

from .atomic import make_parent, remove_leftovers, replacing
from .cache import decode
from .classifier import Classifier
from .data import evaluation_folder, photo_folder, read_folder
from .errors import UserError
from .models import probabilities
from .onnx_model import CONFIG_KEY, INPUT, INT8_KEY, LOOKS_LIKE, OUTPUT, SCORE, OnnxClassifier, as_input
from .rundir import DEFAULT_MODEL, RunDir, resolve

PARITY_TOLERANCE = 1e-4


class _Exported(torch.nn.Module):
    """The network with its temperature and its sigmoid or softmax, so an ONNX user gets
    calibrated probabilities directly; and, where the model has them, the unknown-photo score
    (`unknown.py`'s arithmetic, in the graph) and the ImageNet class the photo looks like most."""

    def __init__(self, clf: Classifier):
        super().__init__()
        self.model = clf.fast.to(memory_format=torch.contiguous_format)
        self.temperature = clf.temperature
        self.check = clf.check is not None
        if self.check:
            self.register_buffer("mean", torch.from_numpy(clf.check.mean))
            self.register_buffer("basis", torch.from_numpy(clf.check.basis))
        self.also_known = clf.check is not None and clf.check.also_known is not None
        if self.also_known:
            self.register_buffer("known_classes", torch.from_numpy(clf.check.also_known))
            self.threshold = clf.check.threshold
        self.imagenet = getattr(clf.model, "imagenet", None)

    def outputs(self) -> list[str]:
        return [OUTPUT] + [SCORE] * self.check + [LOOKS_LIKE] * (self.imagenet is not None)

    def forward(self, pixels):
        v = self.model.embed(pixels)
        out = [probabilities(self.model, self.model.classify(v) / self.temperature)]
        imagenet = None if self.imagenet is None else self.imagenet(v)
        if self.check:
            checked = v if imagenet is None else imagenet
            centred = checked / checked.norm(dim=1, keepdim=True).clamp_min(1e-12) - self.mean
            score = (centred - (centred @ self.basis) @ self.basis.T).norm(dim=1)
            if self.also_known:
                score = torch.where(self.known_classes[checked.argmax(1)], score.clamp(max=self.threshold), score)
            out.append(score)
        if imagenet is not None:
            out.append(imagenet.argmax(1))
        return tuple(out)


def export(
    model_dir, out=None, quantize: bool = False, check=None, calibrate=None, log=print, keep_ranges=None
) -> dict:
    """Export a model directory (or a loaded `Classifier`) to ONNX and return what was checked.

    The batch axis is dynamic. Parity: on batches of 1 and 7 (random pixels), the largest
    difference between onnxruntime's and PyTorch's probabilities must stay under 1e-4.
    With `quantize`, the network computes in int8 (onnxruntime static quantization): `calibrate`,
    a folder of photos like the model's (a few hundred of its training photos), sets the range of
    every layer's values (written to `keep_ranges` where given); without it, the ranges the model
    directory holds (its int8_ranges.json) do. `check`, a labelled folder, measures what int8
    costs in accuracy.
    """
    path = model_dir.path if isinstance(model_dir, Classifier) else resolve(model_dir)
    stored = None if path is None else RunDir(path).int8_ranges
    if quantize and calibrate is None and not (stored and stored.is_file()):
        raise UserError(
            "--quantize needs --calibrate PHOTOS: a folder of photos like the model's (a few hundred of its "
            "training photos will do) to set the range of each layer's values in int8"
        )
    calibration_files = photo_folder(calibrate, "--calibrate") if quantize and calibrate is not None else None
    clf = model_dir if isinstance(model_dir, Classifier) else Classifier.load(path)
    if quantize and check is not None:
        read_folder(evaluation_folder(check), classes=clf.classes)  # a wrong folder fails now, not after the export
    out = make_parent(output_path(clf.path, out, quantize))
    remove_leftovers(out.parent, out.name)  # of exports killed before they could clean up
    calibration = None
    if calibration_files is not None:
        calibration = _calibration_pixels(calibrate, calibration_files, clf.preprocessing, log)
    # Written beside `out` and put in place once checked: an export that fails or is stopped leaves
    # whatever file was there before.
    with replacing(out) as written:
        report = _checked_export(clf, written, out, log, "float32 graph " if quantize else "")
        if quantize:
            ranges = stored if calibration is None else keep_ranges
            report.update(_quantize(written, out, clf, calibration, ranges, check, log))
    return report


def _checked_export(clf: Classifier, path: Path, name: Path, log, what: str = "") -> dict:
    """`clf` as ONNX at `path` (to be named `name`), checked against PyTorch; the log line says
    `what` was exported."""
    size = clf.preprocessing.size
    wrapper = _Exported(clf).eval()
    _write_onnx(wrapper, torch.rand(2, 3, size, size) * 255, wrapper.outputs(), path)
    _store_metadata(path, CONFIG_KEY, json.dumps({**clf.config, "exported_from": str(clf.path)}))
    if not _batch_axis_is_dynamic(path):
        raise RuntimeError(f"{name}: the exporter fixed the batch size; the file would accept one batch size only")

    exported = OnnxClassifier.load(path)
    generator = torch.Generator().manual_seed(0)
    worst = 0.0
    for n in (1, 7):
        pixels = (torch.rand(n, size, size, 3, generator=generator) * 255).to(torch.uint8).numpy()
        worst = max(worst, _difference(exported.outputs(pixels), clf.outputs(pixels)))
    report = {"onnx": str(name), "max_probability_difference": worst, "bytes": path.stat().st_size}
    log(
        f"exported {what}{name} ({path.stat().st_size / 1e6:.2f} MB); largest difference from PyTorch in probabilities"
        f"{' and unknown scores' if clf.check else ''} on batches of 1 and 7: {worst:.2e}"
    )
    if worst >= PARITY_TOLERANCE:
        raise RuntimeError(f"the ONNX model differs from PyTorch by {worst:.2e} (limit {PARITY_TOLERANCE:.0e})")
    return report


def _write_onnx(module: torch.nn.Module, example: torch.Tensor, outputs: list[str], path: Path) -> None:
    """`module`, which takes a batch of pixels, as ONNX at `path`, its batch axis dynamic."""
    with _exporter_quiet():
        try:
            program = torch.onnx.export(
                module,
                (example,),
                dynamo=True,
                verbose=False,
                input_names=[INPUT],
                output_names=outputs,
                dynamic_shapes={"pixels": {0: torch.export.Dim("batch", min=1, max=4096)}},
            )
        except Exception as e:
            # The exporter reports a Ctrl-C inside it as its own failure; it is a Ctrl-C.
            if _caused_by(e, KeyboardInterrupt):
                raise KeyboardInterrupt from None
            raise
        program.optimize()
        program.save(str(path))


def _caused_by(error: BaseException, kind: type) -> bool:
    """Whether `error`, or an exception it was raised from or during, is a `kind`."""
    seen = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, kind):
            return True
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return False


def _difference(a, b) -> float:
    """The largest difference between two models' probabilities and unknown scores; infinite
    where their verdicts or ImageNet names differ."""
    worst = float(np.abs(a.probabilities - b.probabilities).max())
    if (a.scores is None) != (b.scores is None) or (a.looks_like is None) != (b.looks_like is None):
        return float("inf")
    if a.scores is not None:
        worst = max(worst, float(np.abs(a.scores - b.scores).max()))
    if a.looks_like is not None and not np.array_equal(a.looks_like, b.looks_like):
        return float("inf")
    return worst


class _Body(torch.nn.Module):
    """A network's `embed` alone: 0-255 pixels in, the vector its last layer reads out."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, pixels):
        return self.model.embed(pixels)


def export_body(model: torch.nn.Module, size: int, out: Path) -> None:
    """The body of `model` (its `embed`) as ONNX with a dynamic batch axis, written whole or not
    at all; a RuntimeError where onnxruntime's vectors differ from PyTorch's.

    onnxruntime runs EfficientNet-Lite0's body about three times as fast as PyTorch on a CPU,
    which is most of what the label check of a few thousand photos costs."""
    import onnxruntime as ort

    body = _Body(model.to(memory_format=torch.contiguous_format)).eval()
    example = torch.rand(2, 3, size, size) * 255
    with replacing(out) as tmp:
        _write_onnx(body, example, ["vectors"], tmp)
        session = ort.InferenceSession(str(tmp), providers=["CPUExecutionProvider"])
        with torch.no_grad():
            expected = body(example).numpy()
        worst = float(np.abs(session.run(None, {INPUT: example.numpy()})[0] - expected).max())
        if worst > PARITY_TOLERANCE * max(1.0, float(np.abs(expected).max())):
            raise RuntimeError(f"the exported body differs from PyTorch by {worst:.2e}")


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


def _store_metadata(path: Path, key: str, value: str) -> None:
    import onnx

    model = onnx.load(str(path))
    entry = model.metadata_props.add()
    entry.key, entry.value = key, value
    onnx.save(model, str(path))


def _batch_axis_is_dynamic(path: Path) -> bool:
    import onnx

    dim = onnx.load(str(path)).graph.input[0].type.tensor_type.shape.dim[0]
    return bool(dim.dim_param) and not dim.HasField("dim_value")


QUANTIZED_OPERATORS = ["Conv", "Clip", "Add"]


def _quantize(path: Path, name: Path, clf: Classifier, pixels, ranges, check, log) -> dict:
    """`to_int8` the export at `path`, said in the log; with `check`, what it costs in accuracy."""
    to_int8(path, pixels, ranges)
    report = {"quantized": True, "bytes": path.stat().st_size}
    if pixels is not None:
        report["calibration_images"] = len(pixels)
    source = ranges if pixels is None else f"{len(pixels)} photos"
    log(f"quantized to int8, its ranges from {source}: {name} ({path.stat().st_size / 1e6:.2f} MB)")
    if check is not None:
        before = clf.evaluate(check)["accuracy"]
        after = OnnxClassifier.load(path).evaluate(check)["accuracy"]
        report.update({"accuracy_float": before, "accuracy_int8": after})
        log(f"accuracy on {check}: {before:.4f} in float32, {after:.4f} in int8 ({(after - before) * 100:+.2f} points)")
    else:
        log("pass --check DATA to measure what int8 costs in accuracy")
    return report


def to_int8(path: Path, pixels=None, ranges: Path | None = None) -> None:
    """Rewrite the float32 export at `path` to compute in int8.

    Static quantization: every convolution, its activation and each residual sum run on uint8
    values (int8 weights, one scale per output channel) in ranges measured on `pixels`, the
    calibration photos (and written to the file `ranges`, where given), or else read from the file
    `ranges`, so values stay 8-bit from layer to layer. Without VNNI, int8 products go through an
    instruction that can overflow at the full 8 bits, so the weights keep 7 (`reduce_range`). The
    head and the unknown-photo check stay in float32."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if ranges is not None and "calibration_cache_path" not in inspect.signature(quantize_static).parameters:
        raise UserError("this onnxruntime cannot keep or read int8 ranges (a newer one can)")

    class Batches(CalibrationDataReader):
        def __init__(self):
            self.batches = iter(range(0, len(pixels), 8))

        def get_next(self):
            start = next(self.batches, None)
            return None if start is None else {INPUT: as_input(pixels[start : start + 8])}

    # The quantizer writes files of its own beside its input, and leaves them when stopped: a
    # folder of their own, removed whatever happens, holds them.
    with tempfile.TemporaryDirectory(prefix="pawnet-int8-") as folder, _exporter_quiet():
        prepared = Path(folder) / "prepared.onnx"
        quant_pre_process(str(path), str(prepared), skip_symbolic_shape=True)
        if pixels is None:
            _check_ranges(prepared, ranges)
        try:
            quantize_static(
                str(prepared),
                str(path),
                None if pixels is None else Batches(),
                quant_format=QuantFormat.QDQ,
                op_types_to_quantize=QUANTIZED_OPERATORS,
                activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8,
                per_channel=True,
                reduce_range=True,
                **({} if ranges is None else {"calibration_cache_path": ranges}),
            )
        except (ValueError, TypeError, KeyError) as e:
            if pixels is not None:
                raise
            raise UserError(f"{ranges}: int8 ranges that cannot be used ({str(e).splitlines()[0][:200]})") from None
    _store_metadata(path, INT8_KEY, "yes")


def _check_ranges(graph: Path, ranges: Path) -> None:
    """The stored ranges must be readable and name every value the quantizer needs in `graph`,
    and nothing else: the tensor names come from the exporter, and another PyTorch may name them
    otherwise."""
    import onnx

    try:
        stored = set(json.loads(ranges.read_text())["data"])
    except (OSError, ValueError, KeyError, TypeError) as e:
        why = e.strerror if isinstance(e, OSError) else f"not onnxruntime's calibration cache: {e}"
        raise UserError(f"{ranges}: not readable int8 ranges ({why})") from None
    nodes = onnx.load(str(graph)).graph.node
    needed = {name for node in nodes if node.op_type in QUANTIZED_OPERATORS for name in node.output}
    if not needed <= stored <= {name for node in nodes for name in (*node.input, *node.output)}:
        raise UserError(
            f"{ranges} was measured on another export of this model (another PyTorch version?): "
            "quantize with --calibrate PHOTOS"
        )


CALIBRATION_PHOTOS = 256  # the calibration runs the float32 network on every one of them


def _calibration_pixels(folder, files: list[Path], prep, log) -> np.ndarray:
    """Up to CALIBRATION_PHOTOS readable photos of `folder`'s `files`: evenly spaced through them,
    so that every class folder has its share, and where some cannot be read, those beside them."""
    step = max(1, len(files) // CALIBRATION_PHOTOS)
    order = [f for offset in range(step) for f in files[offset::step]]
    pixels, skipped = [], 0
    for start in range(0, len(order), CALIBRATION_PHOTOS):
        decoded = decode(order[start : start + CALIBRATION_PHOTOS], prep, desc="calibrating")
        pixels.append(decoded.pixels)
        skipped += len(decoded.errors)
        if sum(map(len, pixels)) >= CALIBRATION_PHOTOS:
            break
    pixels = np.concatenate(pixels)[:CALIBRATION_PHOTOS]
    if len(pixels) == 0:
        raise UserError(f"{folder}: holds no readable images (--calibrate)")
    if skipped:
        log(f"{folder}: {skipped} files that are not readable images left out of the calibration")
    return pixels
