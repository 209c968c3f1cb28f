"""An exported model run by onnxruntime, without PyTorch.

The ONNX file holds the network (normalisation and softmax or sigmoid included) and, in its
metadata, the model's config.json: classes, preprocessing and the rest. Decoding and resizing
are the same `load_pixels` as every other path.
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from .cache import cpu_count
from .config_check import validate_config
from .errors import UserError
from .predictor import Outputs, Predictor

CONFIG_KEY = "pawnet_config"
INT8_KEY = "pawnet_int8"  # metadata of a graph `to_int8` wrote
INPUT, OUTPUT = "pixels", "probabilities"
SCORE, LOOKS_LIKE = "unknown_score", "looks_like"  # outputs of models exported with them


class OnnxClassifier(Predictor):
    def __init__(self, session, config: dict, path: Path | None = None):
        super().__init__(config, path)
        self.session = session
        self.int8 = session is not None and INT8_KEY in session.get_modelmeta().custom_metadata_map
        self.workers = cpu_count()
        self._threads: ThreadPoolExecutor | None = None

    @classmethod
    def load(cls, path) -> OnnxClassifier:
        import onnxruntime as ort

        path = Path(path)
        if not path.is_file():
            raise UserError(f"{path}: no such ONNX file")
        try:
            options = ort.SessionOptions()
            # Threads that spin while they wait for work take the cores from Pillow decoding the
            # next photos beside them (`predict`), and from a busy machine's other work.
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
            options.intra_op_num_threads = 1  # `outputs` runs one batch per core
            session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
            text = session.get_modelmeta().custom_metadata_map.get(CONFIG_KEY)
        except Exception as e:  # onnxruntime raises its own exception types for unreadable files
            raise UserError(f"{path}: not a readable ONNX model ({str(e).splitlines()[0][:200]})") from None
        if text is None:
            raise UserError(f"{path}: an ONNX file not exported by pawnet (no {CONFIG_KEY} metadata)")
        try:
            config = json.loads(text)
        except ValueError as e:
            raise UserError(f"{path}: its {CONFIG_KEY} metadata is not valid JSON ({e})") from None
        validate_config(config, path)
        _check_graph(session, config, path)
        return cls(session, config, path)

    def outputs(self, pixels: np.ndarray, tta: bool = False, batch_size: int = 8) -> Outputs:
        # One small batch per core at a time, each run on one thread: on a CPU that keeps the
        # cores busier than one run spreading each operation over all of them (about 10% more
        # photos a second for EfficientNet-Lite0 on 2 cores), and small batches stay in cache.
        batch_size = max(1, min(batch_size, -(-len(pixels) // self.workers)))
        starts = range(0, len(pixels), batch_size)
        parts = self._pool().map(lambda start: self._run(pixels[start : start + batch_size], tta), starts)
        return Outputs.join(parts, len(pixels), len(self.classes))

    def _run(self, pixels, tta: bool) -> Outputs:
        names = [o.name for o in self.session.get_outputs() if o.name in (OUTPUT, SCORE, LOOKS_LIKE)]
        x = as_input(pixels)
        got = dict(zip(names, self.session.run(names, {INPUT: x})))
        if tta:
            mirrored = dict(zip(names, self.session.run(names, {INPUT: np.ascontiguousarray(x[..., ::-1])})))
            for name in (OUTPUT, SCORE):
                if name in got:
                    got[name] = (got[name] + mirrored[name]) / 2
        return Outputs(got[OUTPUT], got.get(SCORE), got.get(LOOKS_LIKE))

    def _pool(self) -> ThreadPoolExecutor:
        if self._threads is None:
            self._threads = ThreadPoolExecutor(self.workers, thread_name_prefix="onnxruntime")
        return self._threads


def as_input(pixels) -> np.ndarray:
    """uint8 pixels (N, H, W, 3) as the graph takes them: float32, channels first."""
    return np.ascontiguousarray(np.asarray(pixels).transpose(0, 3, 1, 2), dtype=np.float32)


def _check_graph(session, config: dict, path: Path) -> None:
    """The graph takes `pixels` of the config's size and answers one probability per class:
    read from its shapes where they are fixed, else from one run on a single black image."""
    inputs, outputs = {i.name: i for i in session.get_inputs()}, {o.name: o for o in session.get_outputs()}
    if INPUT not in inputs or OUTPUT not in outputs:
        raise UserError(f"{path}: an ONNX file not exported by pawnet (no {INPUT!r} input or {OUTPUT!r} output)")
    size, n_classes = config["preprocessing"]["size"], len(config["classes"])
    shape = list(inputs[INPUT].shape)
    if len(shape) != 4 or any(isinstance(d, int) and d != e for d, e in zip(shape[1:], (3, size, size))):
        raise UserError(f"{path}: the network takes {shape[1:]} pixels, and the config says 3 x {size} x {size}")
    width = outputs[OUTPUT].shape[-1] if len(outputs[OUTPUT].shape) == 2 else None
    if not isinstance(width, int):
        try:
            width = session.run([OUTPUT], {INPUT: np.zeros((1, 3, size, size), np.float32)})[0].shape[-1]
        except Exception as e:  # onnxruntime's own exception types
            raise UserError(f"{path}: the network does not run on one image ({str(e).splitlines()[0][:200]})") from None
    if width != n_classes:
        raise UserError(f"{path}: the network answers {width} probabilities, and the config lists {n_classes} classes")
