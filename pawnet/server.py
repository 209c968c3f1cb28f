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
import contextlib
import errno
import io
import json
import os
import secrets
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager, suppress
from importlib import resources
from typing import Annotated, Literal

import numpy as np
from fastapi import FastAPI, File, HTTPException, Query, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from PIL import Image
from starlette.concurrency import run_in_threadpool

from .errors import UserError
from .images import ImageError, Preprocessing, load_pixels
from .predictor import Outputs, Predictor
from .version import __version__

MB = 1 << 20
EXPLAIN_SIZE = 256  # side of the overlay /explain draws, whatever the network's input size
# The most pixels an uploaded image may decode to (a JPEG: after its reduced-scale decoding).
# Every network here looks at 1024 px or less, and an RGBA image of this size already takes
# about 250 MB on its way to RGB; Pillow's own limit, 89 MP, would take over 1 GB.
SERVER_MAX_PIXELS = 4096 * 4096
# Images decoded at once, whatever the number of requests: decoding is CPU work, so more than
# one per core gains no speed and multiplies the memory a burst of large uploads takes.
DECODE_SLOTS = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
LOOPBACK = ("localhost", "127.0.0.1", "::1")


def request_limit_mb(max_upload_mb: float, max_files: int) -> float:
    """The default `--max-request-mb`: room for `max_files` full-size files, capped at 64 MB
    (or one file, where a file may be larger), so one request never spools gigabytes."""
    return min(max_upload_mb * max_files, max(64, max_upload_mb))


def check_options(port: int, max_upload_mb: float, max_files: int, max_request_mb: float | None) -> None:
    """Refuse, as one line, the options that would only fail once the server is up."""
    if not 1 <= port <= 65535:
        raise UserError(f"--port {port}: a port is a number from 1 to 65535")
    if max_files < 1:
        raise UserError(f"--max-files {max_files}: must be at least 1")
    if not max_upload_mb > 0:
        raise UserError(f"--max-upload-mb {max_upload_mb:g}: must be above 0")
    if max_request_mb is not None and not max_request_mb > 0:
        raise UserError(f"--max-request-mb {max_request_mb:g}: must be above 0")


def bind(host: str, port: int) -> socket.socket:
    """The socket bound to the address, not yet listening, or one line saying why there is none
    (a busy port, an unknown host)."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        sock = socket.socket(family, kind, proto)
    except OSError as e:
        raise UserError(f"--host {host}: cannot listen there ({e.strerror or e})") from None
    with _refused(sock, host, port):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
    return sock


def listen(sock: socket.socket, host: str, port: int) -> None:
    # Two sockets may both bind a port with SO_REUSEADDR until one listens: the second to listen fails.
    with _refused(sock, host, port):
        sock.listen(2048)


@contextlib.contextmanager
def _refused(sock: socket.socket, host: str, port: int):
    try:
        yield
    except OSError as e:
        sock.close()
        reason = "already in use" if e.errno == errno.EADDRINUSE else (e.strerror or str(e))
        raise UserError(f"cannot serve on {host}:{port}: {reason} (pick another --port)") from None


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

    async def outputs(self, pixels: np.ndarray) -> Outputs:
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
                out, _ = await self.on_model_thread(self._run_model, np.concatenate([p for p, _ in items]))
            except Exception as e:  # hand the failure to each waiting request rather than die
                for _, future in items:
                    if not future.done():
                        future.set_exception(e)
                continue
            start = 0
            for pixels, future in items:
                if not future.done():  # its client may have gone
                    future.set_result(out[start : start + len(pixels)])
                start += len(pixels)

    def _run_model(self, pixels: np.ndarray) -> tuple[Outputs, float]:
        """What the model says of the pixels, and the seconds the network took."""
        start = time.perf_counter()
        n = len(pixels)
        padded = np.zeros((1 << (n - 1).bit_length(), *pixels.shape[1:]), pixels.dtype)
        padded[:n] = pixels
        return self.predictor.outputs(padded)[:n], time.perf_counter() - start


class _Api:
    """The endpoints, over one model, its batcher and the server's limits."""

    def __init__(self, predictor: Predictor, batcher: Batcher, max_upload_mb: float, max_files: int):
        self.predictor, self.batcher = predictor, batcher
        self.max_upload_mb, self.max_files = max_upload_mb, max_files
        self.limit = int(max_upload_mb * MB)
        self.decodes = asyncio.Semaphore(DECODE_SLOTS)

    async def decode(self, data: bytes, prep: Preprocessing) -> np.ndarray:
        """The pixels of one upload, decoded on a worker thread, `DECODE_SLOTS` at a time."""
        async with self.decodes:
            return await run_in_threadpool(load_pixels, data, prep, SERVER_MAX_PIXELS)

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
                pixels = await self.decode(await self.read_upload(upload), self.predictor.preprocessing)
                readable.append((len(results), pixels))
                results.append({"path": name})
            except ImageError as e:
                results.append({"path": name, "error": str(e)})
        if not readable:
            raise HTTPException(422, "no readable image: " + "; ".join(f"{r['path']}: {r['error']}" for r in results))
        out = await self.batcher.outputs(np.stack([pixels for _, pixels in readable]))
        for row, (i, _) in enumerate(readable):
            results[i] = self.predictor.labelled(results[i]["path"], out[row])
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
            raise HTTPException(422, "explain takes one image per request; /predict takes many")
        if not self.predictor.explainable:
            raise HTTPException(
                400, "explain follows gradients through PyTorch: serve the model directory, not an .onnx file"
            )
        prep = self.predictor.preprocessing
        try:
            data = await self.read_upload(file)
            pixels = await self.decode(data, prep)
            photo = await self.decode(data, Preprocessing(EXPLAIN_SIZE, prep.resize))
        except ImageError as e:
            raise HTTPException(422, f"{file.filename}: {e}") from None
        png, cam = await self.batcher.on_model_thread(_explain_png, self.predictor, pixels, photo)
        said = await self.batcher.outputs(pixels[None])
        if format == "png":
            return Response(png, media_type="image/png")
        return {
            **self.predictor.labelled(file.filename or "upload", said[0]),
            "explained_class": self.predictor.classes[cam.class_index],
            "layer": cam.layer,
            "overlay_png_base64": base64.b64encode(png).decode(),
        }


class _Guard:
    """ASGI middleware refusing what the endpoints would refuse anyway, before the body is read:
    a `Host` this server does not answer to (DNS rebinding), a missing token, a body that is not
    multipart, and a body over `largest_request` bytes. That last one is counted while the body
    streams in, so a chunked upload with no Content-Length is stopped at the limit too, before
    the multipart parser spools it to disk."""

    PROTECTED = ("/predict", "/explain", "/model")

    def __init__(self, app, token: str | None, hosts: set[str] | None, largest_request: int):
        self.app, self.hosts, self.largest_request = app, hosts, largest_request
        self.bearer = None if token is None else b"Bearer " + token.encode("utf-8")

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        refusal = self.refusal(scope, {k.lower(): v for k, v in scope["headers"]})
        if refusal:
            return await _answer(send, *refusal)
        if scope["method"] != "POST":
            return await self.app(scope, receive, send)
        await self.limited(scope, receive, send)

    def refusal(self, scope, headers: dict[bytes, bytes]) -> tuple[int, str] | None:
        host = _host_name(headers.get(b"host", b"").decode("latin-1"))
        if self.hosts is not None and host not in self.hosts:
            return 421, f"this server does not answer to host {host or '(none)'!r}; start it with --allow-host {host}"
        path = scope["path"]
        given = headers.get(b"authorization", b"")  # bytes as sent: a UTF-8 token compares as UTF-8
        if path in self.PROTECTED and self.bearer is not None and not secrets.compare_digest(given, self.bearer):
            return 401, "this server needs Authorization: Bearer <token>"
        if scope["method"] == "POST" and path in ("/predict", "/explain"):
            kind = headers.get(b"content-type", b"").decode("latin-1")
            if not kind.startswith("multipart/form-data"):
                return 415, "send the images as multipart/form-data" + (f", not {kind}" if kind else "")
            length = headers.get(b"content-length", b"").decode("latin-1")
            if length.isdigit() and int(length) > self.largest_request:
                return 413, self.too_large(int(length))
        return None

    def too_large(self, size: int | None = None) -> str:
        given = "request" if size is None else f"request of {size / MB:.1f} MB"
        return f"{given} is over this server's {self.largest_request / MB:.1f} MB limit (--max-request-mb)"

    async def limited(self, scope, receive, send):
        """Run the app with the body counted as it arrives: past the limit, the app's reading
        stops with an error, whatever it would answer is dropped, and the answer is 413."""
        seen, over, started = 0, False, False

        async def counted():
            nonlocal seen, over
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.largest_request:
                over = True
                raise _TooLarge
            return message

        async def guarded_send(message):
            nonlocal started
            if not over:
                started = True
                await send(message)

        with suppress(_TooLarge):
            await self.app(scope, counted, guarded_send)
        if over and not started:
            await _answer(send, 413, self.too_large())


class _TooLarge(Exception):
    pass


def _host_name(host: str) -> str:
    """The name in a Host header, without its port: `[::1]:8000` -> `::1`."""
    if host.startswith("["):
        return host[1 : host.find("]")] if "]" in host else host
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


async def _answer(send, status: int, detail: str) -> None:
    body = json.dumps({"detail": detail}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if status == 413:  # the rest of the body is not read: the connection cannot carry another request
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def allowed_hosts(host: str, allow: tuple[str, ...] | list[str]) -> set[str] | None:
    """The names a Host header may give: the address listened on, loopback, and `allow`;
    None (no check) where `allow` holds '*'."""
    if "*" in allow:
        return None
    names = {host.strip("[]"), *LOOPBACK, *(a.strip("[]").lower() for a in allow)}
    if host in ("0.0.0.0", "::", ""):
        names.add(socket.gethostname().lower())
    return names


def create_app(
    predictor: Predictor,
    *,
    max_upload_mb: float = 20,
    max_files: int = 64,
    max_request_mb: float | None = None,
    token: str | None = None,
    host: str = "127.0.0.1",
    allow_hosts: tuple[str, ...] | list[str] = (),
) -> FastAPI:
    """The FastAPI application serving `predictor` (a model from `pawnet.load`).

    Requests must name `host`, a loopback name or one of `allow_hosts` in their Host header
    ('*' in `allow_hosts`: any). A request's body may hold `max_request_mb` (by default
    `request_limit_mb(max_upload_mb, max_files)`), plus room for each file's part headers.
    """
    batcher = Batcher(predictor)
    api = _Api(predictor, batcher, max_upload_mb, max_files)
    request_mb = request_limit_mb(max_upload_mb, max_files) if max_request_mb is None else max_request_mb

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
    app.add_middleware(
        _Guard,
        token=token,
        hosts=allowed_hosts(host, allow_hosts),
        largest_request=int(request_mb * MB) + 1024 * max_files,
    )
    app.exception_handler(RequestValidationError)(_plain_validation_error)
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
            **dict.fromkeys((413, 415, 422), {}),
        },
    )(api.explain)
    return app


async def _plain_validation_error(request: Request, error: RequestValidationError) -> JSONResponse:
    """FastAPI's list of what a request lacked, said in one sentence as the other refusals are."""
    said = []
    for e in error.errors():
        where, name = e["loc"][0], ".".join(map(str, e["loc"][1:]))
        if where == "body" and e["type"] == "missing":
            said.append(f"send the image{'s' if name == 'files' else ''} in the multipart field {name!r}")
        else:
            said.append(f"{name or where}: {e['msg']}")
    return JSONResponse({"detail": "; ".join(said)}, status_code=422)


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
    max_request_mb: float | None = None,
    allow_hosts: tuple[str, ...] | list[str] = (),
    engine: str | None = None,
    log=print,
) -> None:
    """Serve `model` (a model directory, an .onnx file, or the default model) until interrupted.

    The options are checked and the port bound before "serving" is said: a busy port or an
    impossible limit is a UserError (one line, exit status 2), not a traceback.
    """
    import uvicorn

    from .loader import load

    check_options(port, max_upload_mb, max_files, max_request_mb)
    # Bound first, so that a busy port is said at once, not after the model is prepared.
    sock = bind(host, port)
    try:
        predictor = load(model, engine)
        # A model directory is prepared for onnxruntime when it first predicts (up to half a
        # minute, or an error): before "serving" is said, not while the first requests wait.
        size = predictor.preprocessing.size
        predictor.outputs(np.zeros((1, size, size, 3), np.uint8))
    except BaseException:
        sock.close()
        raise
    listen(sock, host, port)
    if host not in LOOPBACK:
        log(
            f"warning: serving on {host}, so other machines can reach this model"
            + ("" if token else "; consider --token")
            + ("" if allow_hosts else "; requests must name it by an address given with --allow-host")
        )
    log(
        f"serving {predictor.path} ({predictor.config['arch']}: {', '.join(predictor.classes)}) on http://{host}:{port}/"
    )
    app = create_app(
        predictor,
        max_upload_mb=max_upload_mb,
        max_files=max_files,
        max_request_mb=max_request_mb,
        token=token,
        host=host,
        allow_hosts=allow_hosts,
    )
    uvicorn.Server(uvicorn.Config(app, log_level="warning")).run(sockets=[sock])
