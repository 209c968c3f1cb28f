"""`pawnet serve MODEL`: a web page and an HTTP API for a trained model, on FastAPI + uvicorn.

    POST /predict   multipart field `files` (one or many images) -> predict --json's list
    POST /explain   multipart field `file` (one image) -> the Grad-CAM overlay as PNG, or JSON
    GET  /health, GET /model, GET / (the page), /docs and /openapi.json

Bad input is answered with a 4xx and a JSON `detail`; the server itself carries on. Images
that arrive together are run through the network as one batch.
"""

from __future__ import annotations

import asyncio
import base64
import io
import secrets
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from importlib import resources
from typing import Annotated, Literal

import numpy as np
from fastapi import FastAPI, File, HTTPException, Query, Request, UploadFile
from fastapi.responses import HTMLResponse, JSONResponse, Response
from PIL import Image
from starlette.concurrency import run_in_threadpool

from .images import ImageError, Preprocessing, load_pixels
from .predictor import Predictor
from .version import __version__

MB = 1 << 20
EXPLAIN_SIZE = 256  # side of the overlay /explain draws, whatever the network's input size


class Batcher:
    """Runs the network for the requests, several images at once where that raises throughput.

    Batching pays only when the network, not reading the upload, is what a request waits for.
    Under load (`benchmarks/serve_load.py`; figures in benchmarks/README.md), batching raised the
    throughput of a slow network, the EfficientNet default model, while a fast one, the seed
    network, gained no throughput and its tail latency grew, as answers left in bursts. So at
    start the batcher times the network on one image: above `batch_above` seconds, it waits
    `wait` after an image arrives and takes up to `max_batch` together; below, it runs one
    request at a time. The network runs on one thread of its own, and each batch is padded to a
    power of two: PyTorch's CPU kernels keep per-thread and per-shape caches, which would
    otherwise grow with every new thread and batch size the server meets.
    """

    def __init__(self, predictor: Predictor, max_batch: int = 8, wait: float = 0.002, batch_above: float = 0.005):
        self.predictor = predictor
        self.max_batch, self.wait, self.batch_above = max_batch, wait, batch_above
        self.queue: asyncio.Queue = asyncio.Queue()
        self.thread = ThreadPoolExecutor(1, thread_name_prefix="pawnet-model")
        self.batching = False

    async def on_model_thread(self, function, *args):
        return await asyncio.get_running_loop().run_in_executor(self.thread, function, *args)

    async def calibrate(self) -> None:
        size = self.predictor.preprocessing.size
        one = np.zeros((1, size, size, 3), np.uint8)
        times = [(await self.on_model_thread(self._run_model, one))[1] for _ in range(4)]
        self.batching = sorted(times[1:])[1] > self.batch_above  # the median, after a warm-up

    async def probabilities(self, pixels: np.ndarray) -> np.ndarray:
        future = asyncio.get_running_loop().create_future()
        await self.queue.put((pixels, future))
        return await future

    async def run(self) -> None:
        while True:
            items = [await self.queue.get()]
            if self.batching:
                await asyncio.sleep(self.wait)
                while not self.queue.empty() and sum(len(p) for p, _ in items) < self.max_batch:
                    items.append(self.queue.get_nowait())
            try:
                probs, _ = await self.on_model_thread(self._run_model, np.concatenate([p for p, _ in items]))
            except Exception as e:  # hand the failure to each waiting request rather than die
                for _, future in items:
                    if not future.done():
                        future.set_exception(e)
                continue
            start = 0
            for pixels, future in items:
                if not future.done():  # its client may have gone
                    future.set_result(probs[start : start + len(pixels)])
                start += len(pixels)

    def _run_model(self, pixels: np.ndarray) -> tuple[np.ndarray, float]:
        """Probabilities, and the seconds the network took."""
        start = time.perf_counter()
        n = len(pixels)
        padded = np.zeros((1 << (n - 1).bit_length(), *pixels.shape[1:]), pixels.dtype)
        padded[:n] = pixels
        return self.predictor.probabilities(padded)[:n], time.perf_counter() - start


class _Api:
    """The endpoints, over one model, its batcher and the server's limits."""

    def __init__(self, predictor: Predictor, batcher: Batcher, max_upload_mb: float, max_files: int):
        self.predictor, self.batcher = predictor, batcher
        self.max_upload_mb, self.max_files = max_upload_mb, max_files
        self.limit = int(max_upload_mb * MB)

    async def read_upload(self, upload: UploadFile) -> bytes:
        """The file's bytes; over the size limit, 413 (having read one byte past the limit at most)."""
        data = await upload.read(self.limit + 1)
        if len(data) > self.limit:
            raise HTTPException(413, f"{upload.filename}: over the {self.max_upload_mb:g} MB limit (--max-upload-mb)")
        return data

    def page(self):
        return resources.files("pawnet").joinpath("static/index.html").read_text(encoding="utf-8")

    def health(self) -> dict:
        return {"status": "ok"}

    def model_info(self) -> dict:
        """Architecture, classes, input size and the training metrics of the model served."""
        prep = self.predictor.preprocessing
        return {
            "arch": self.predictor.config["arch"],
            "classes": self.predictor.classes,
            "image_size": prep.size,
            "preprocessing": prep.to_dict(),
            "metrics": self.predictor.config.get("metrics", {}),
            "explain": self.predictor.explainable,
            "max_upload_mb": self.max_upload_mb,
            "max_files": self.max_files,
            "batching": self.batcher.batching,
        }

    async def predict(self, files: Annotated[list[UploadFile], File(description="one or more images")]) -> list[dict]:
        """Label and class probabilities for each image, as `pawnet predict --json` gives them.

        An unreadable image among readable ones gets an `error` entry; when none can be read
        the answer is 422.
        """
        if len(files) > self.max_files:
            raise HTTPException(
                413, f"{len(files)} files in one request; this server takes up to {self.max_files} (--max-files)"
            )
        results, readable = [], []
        for upload in files:
            name = upload.filename or "upload"
            try:
                pixels = await run_in_threadpool(
                    load_pixels, await self.read_upload(upload), self.predictor.preprocessing
                )
                readable.append((len(results), pixels))
                results.append({"path": name})
            except ImageError as e:
                results.append({"path": name, "error": str(e)})
        if not readable:
            raise HTTPException(422, "no readable image: " + "; ".join(f"{r['path']}: {r['error']}" for r in results))
        probs = await self.batcher.probabilities(np.stack([pixels for _, pixels in readable]))
        for (i, _), p in zip(readable, probs):
            results[i] = self.predictor.labelled(results[i]["path"], p)
        return results

    async def explain(
        self,
        request: Request,
        file: Annotated[UploadFile, File(description="one image")],
        format: Annotated[
            Literal["png", "json"],
            Query(description="png: the overlay; json: label, probabilities and the overlay in base64"),
        ] = "png",
    ):
        """Where the network looked (Grad-CAM) for its label of one image."""
        if len((await request.form()).getlist("file")) > 1:
            raise HTTPException(413, "explain takes one image per request; /predict takes many")
        if not self.predictor.explainable:
            raise HTTPException(
                400, "explain follows gradients through PyTorch: serve the model directory, not an .onnx file"
            )
        prep = self.predictor.preprocessing
        try:
            data = await self.read_upload(file)
            pixels = await run_in_threadpool(load_pixels, data, prep)
            photo = await run_in_threadpool(load_pixels, data, Preprocessing(EXPLAIN_SIZE, prep.resize))
        except ImageError as e:
            raise HTTPException(422, f"{file.filename}: {e}") from None
        png, cam = await self.batcher.on_model_thread(_explain_png, self.predictor, pixels, photo)
        if format == "png":
            return Response(png, media_type="image/png")
        return {
            **self.predictor.labelled(file.filename or "upload", cam.probabilities),
            "explained_class": self.predictor.classes[cam.class_index],
            "layer": cam.layer,
            "overlay_png_base64": base64.b64encode(png).decode(),
        }


def _error(status: int, detail: str) -> JSONResponse:
    return JSONResponse({"detail": detail}, status_code=status)


def _guard(token: str | None, largest_request: int):
    """Middleware refusing, before reading a byte of the body, what the endpoints would refuse anyway."""

    async def guard(request: Request, call_next):
        if request.url.path in ("/predict", "/explain", "/model") and token is not None:
            given = request.headers.get("authorization", "")
            if not secrets.compare_digest(given.encode(), f"Bearer {token}".encode()):
                return _error(401, "this server needs Authorization: Bearer <token>")
        if request.method == "POST" and request.url.path in ("/predict", "/explain"):
            kind = request.headers.get("content-type", "")
            if not kind.startswith("multipart/form-data"):
                return _error(415, f"send the images as multipart/form-data, not {kind or 'no content type'}")
            length = request.headers.get("content-length", "")
            if length.isdigit() and int(length) > largest_request:
                return _error(413, f"request of {int(length) / MB:.1f} MB is larger than this server takes")
        return await call_next(request)

    return guard


def create_app(
    predictor: Predictor, *, max_upload_mb: float = 20, max_files: int = 64, token: str | None = None
) -> FastAPI:
    """The FastAPI application serving `predictor` (a model from `pawnet.load`)."""
    batcher = Batcher(predictor)
    api = _Api(predictor, batcher, max_upload_mb, max_files)

    @asynccontextmanager
    async def lifespan(app):
        await batcher.calibrate()
        task = asyncio.create_task(batcher.run())
        yield
        task.cancel()

    app = FastAPI(
        title="pawnet",
        version=__version__,
        description=f"Image classifier: {predictor.config['arch']} telling {', '.join(predictor.classes)}.",
        lifespan=lifespan,
    )
    app.middleware("http")(_guard(token, api.limit * max_files + MB))
    app.get("/", response_class=HTMLResponse, include_in_schema=False)(api.page)
    app.get("/health")(api.health)
    app.get("/model")(api.model_info)
    app.post(
        "/predict",
        responses={
            413: {"description": "a file over the size limit"},
            415: {},
            422: {"description": "no image could be read"},
        },
    )(api.predict)
    app.post(
        "/explain",
        responses={
            200: {"content": {"image/png": {}}, "description": "the Grad-CAM overlay, or JSON with format=json"},
            413: {},
            415: {},
            422: {},
        },
    )(api.explain)
    return app


def _explain_png(predictor, pixels, photo):
    from .explanations import overlay

    cam = predictor.grad_cam(pixels)
    buf = io.BytesIO()
    Image.fromarray(overlay(photo, cam.heatmap)).save(buf, format="PNG")
    return buf.getvalue(), cam


def serve(
    model=None,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    token: str | None = None,
    max_upload_mb: float = 20,
    max_files: int = 64,
    log=print,
) -> None:
    """Serve `model` (a model directory, an .onnx file, or the default model) until interrupted."""
    import uvicorn

    from .loader import load

    predictor = load(model)
    if host not in ("127.0.0.1", "localhost", "::1"):
        log(
            f"warning: serving on {host}, so other machines can reach this model"
            + ("" if token else "; consider --token")
        )
    log(
        f"serving {predictor.path} ({predictor.config['arch']}: {', '.join(predictor.classes)}) on http://{host}:{port}/"
    )
    app = create_app(predictor, max_upload_mb=max_upload_mb, max_files=max_files, token=token)
    uvicorn.run(app, host=host, port=port, log_level="warning")
