"""An exported model run by onnxruntime, without PyTorch.

The ONNX file holds the network (normalisation and softmax or sigmoid included) and, in its
metadata, the model's config.json: classes, preprocessing and the rest. Decoding and resizing
are the same `load_pixels` as every other path.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .errors import UserError
from .images import Preprocessing
from .predictor import Predictor

CONFIG_KEY = "pawnet_config"
INPUT, OUTPUT = "pixels", "probabilities"


class OnnxClassifier(Predictor):
    def __init__(self, session, config: dict, path: Path | None = None):
        super().__init__(config, path)
        self.session = session

    @classmethod
    def load(cls, path) -> OnnxClassifier:
        import onnxruntime as ort

        path = Path(path)
        if not path.is_file():
            raise UserError(f"{path}: no such ONNX file")
        try:
            session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
            config = json.loads(session.get_modelmeta().custom_metadata_map[CONFIG_KEY])
            Preprocessing.from_dict(config["preprocessing"])
        except KeyError:
            raise UserError(f"{path}: an ONNX file not exported by pawnet (no {CONFIG_KEY} metadata)") from None
        except Exception as e:  # onnxruntime raises its own exception types for unreadable files
            raise UserError(f"{path}: not a readable ONNX model ({str(e).splitlines()[0][:200]})") from None
        return cls(session, config, path)

    def probabilities(self, pixels: np.ndarray, tta: bool = False, batch_size: int = 256) -> np.ndarray:
        out = []
        for start in range(0, len(pixels), batch_size):
            x = np.ascontiguousarray(
                np.asarray(pixels[start : start + batch_size]).transpose(0, 3, 1, 2), dtype=np.float32
            )
            p = self.session.run([OUTPUT], {INPUT: x})[0]
            if tta:
                p = (p + self.session.run([OUTPUT], {INPUT: np.ascontiguousarray(x[..., ::-1])})[0]) / 2
            out.append(p)
        return np.concatenate(out) if out else np.zeros((0, len(self.classes)), np.float32)
