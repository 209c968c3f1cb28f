"""`pawnet serve`: the real server on a free loopback port, bad input, fuzzing and a real browser."""

from __future__ import annotations

import asyncio
import io
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import pattern, png_claiming, run_cli
from nodes import free_port

httpx = pytest.importorskip("httpx", reason="httpx is not installed (pip install -e '.[test]')")

OUTPUT = Path(__file__).resolve().parents[1] / "test-output"


class Server:
    def __init__(self, model, *options):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process = subprocess.Popen(
            [sys.executable, "-m", "pawnet", "serve", str(model), "--port", str(self.port), *map(str, options)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        # A model not yet exported for onnxruntime is exported first (half a minute on a quiet
        # machine, several times that beside other tests): a bound on a hang, not a speed test.
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"serve exited: {self.process.stdout.read()}")
            try:
                if httpx.get(self.url + "/health", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.2)
        self.process.kill()
        raise RuntimeError(f"serve did not answer /health within 300 s: {self.process.communicate()[0]}")

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=30)


@pytest.fixture(scope="module")
def server(trained_model):
    s = Server(trained_model, "--max-upload-mb", "1", "--max-files", "4")
    yield s
    s.stop()


def png(kind="horizontal", seed=0, size=48) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pattern(kind, size, seed)).save(buf, format="PNG")
    return buf.getvalue()


def jpeg(seed=0) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pattern("vertical", 200, seed)).save(buf, format="JPEG")
    return buf.getvalue()


def test_predict_answers_what_predict_json_answers(server, trained_model, tmp_path):
    import pawnet

    images = {"a.png": png("horizontal", 1), "b.jpg": jpeg(2), "disc.png": png("disc", 3)}
    for name, data in images.items():
        (tmp_path / name).write_bytes(data)
    expected = pawnet.load(trained_model).predict([tmp_path / n for n in images])
    r = httpx.post(server.url + "/predict", files=[("files", (n, d)) for n, d in images.items()])
    assert r.status_code == 200, r.text
    got = r.json()
    assert [g["path"] for g in got] == list(images)
    for g, e in zip(got, expected):
        assert g["label"] == e["label"] and g["known"] == e["known"]
        assert g["unknown_score"] == pytest.approx(e["unknown_score"], abs=1e-5)
        assert g["probabilities"] == pytest.approx(e["probabilities"], abs=1e-5)


def test_an_unreadable_file_among_readable_ones_gets_an_error_entry(server):
    r = httpx.post(
        server.url + "/predict", files=[("files", ("good.png", png())), ("files", ("bad.jpg", b"not an image"))]
    )
    assert r.status_code == 200
    good, bad = r.json()
    assert "label" in good and "error" in bad


def test_explain_answers_a_png_or_json(server):
    r = httpx.post(server.url + "/explain", files={"file": ("a.png", png())})
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    assert Image.open(io.BytesIO(r.content)).size == (256, 256)
    r = httpx.post(server.url + "/explain?format=json", files={"file": ("a.png", png())})
    body = r.json()
    assert body["label"] in ("horizontal", "vertical") and body["layer"]
    import base64

    assert Image.open(io.BytesIO(base64.b64decode(body["overlay_png_base64"]))).format == "PNG"


def test_health_model_docs_and_openapi(server, trained_model):
    assert httpx.get(server.url + "/health").json() == {"status": "ok"}
    model = httpx.get(server.url + "/model").json()
    assert model["classes"] == ["horizontal", "vertical"] and model["arch"] == "seed" and model["image_size"] == 32
    assert "val_accuracy" in model["metrics"]
    schema = httpx.get(server.url + "/openapi.json").json()
    assert {"/predict", "/explain", "/health", "/model"} <= set(schema["paths"])
    assert httpx.get(server.url + "/docs").status_code == 200
    page = httpx.get(server.url + "/")
    assert page.status_code == 200 and "<title>pawnet</title>" in page.text
    assert "http://" not in page.text and "https://" not in page.text  # nothing fetched from elsewhere


BAD = {
    "not an image": dict(files=[("files", ("a.jpg", b"hello, I am text"))]),
    "truncated JPEG": dict(files=[("files", ("t.jpg", jpeg()[:300]))]),
    "zero bytes": dict(files=[("files", ("z.jpg", b""))]),
    "20000x20000 bomb": dict(files=[("files", ("bomb.png", png_claiming(20_000, 20_000)))]),
    "over the size limit": dict(files=[("files", ("big.png", b"\x89PNG" + os.urandom(1_200_000)))]),
    "too many files": dict(files=[("files", (f"{i}.png", png(seed=i))) for i in range(5)]),
    "missing field": dict(files=[("photo", ("a.png", png()))]),
    "wrong content type": dict(json={"files": ["a.png"]}),
    "no body": dict(),
}


@pytest.mark.parametrize("case", list(BAD))
@pytest.mark.parametrize("endpoint", ["/predict", "/explain"])
def test_bad_input_is_a_4xx_with_json_and_the_server_lives_on(server, endpoint, case):
    request = dict(BAD[case])
    if endpoint == "/explain" and "files" in request:  # /explain's field is `file`
        request["files"] = [("file" if name == "files" else name, f) for name, f in request["files"]][:1]
        if case == "too many files":
            request["files"] = [("file", f) for _, f in BAD[case]["files"]]
    r = httpx.post(server.url + endpoint, timeout=30, **request)
    assert 400 <= r.status_code < 500, (r.status_code, r.text)
    assert isinstance(r.json()["detail"], str)  # a sentence, as a person reads it
    if case == "missing field":
        field = "file" if endpoint == "/explain" else "files"
        assert r.json()["detail"] == f"send the image{'s' * (field == 'files')} in the multipart field '{field}'"
    assert httpx.get(server.url + "/health").status_code == 200
    assert server.process.poll() is None


def test_token_is_required_when_set(trained_model):
    s = Server(trained_model, "--token", "s3cret")
    try:
        assert httpx.post(s.url + "/predict", files={"files": ("a.png", png())}).status_code == 401
        assert httpx.get(s.url + "/model").status_code == 401
        assert httpx.get(s.url + "/health").status_code == 200
        ok = httpx.post(
            s.url + "/predict", files={"files": ("a.png", png())}, headers={"Authorization": "Bearer s3cret"}
        )
        assert ok.status_code == 200
    finally:
        s.stop()


def test_a_missing_or_broken_model_stops_serve_with_one_line(tmp_path):
    r = run_cli("serve", tmp_path / "missing")
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "config.json").write_text("{not json")
    (tmp_path / "broken" / "model.safetensors").write_bytes(b"")
    r = run_cli("serve", tmp_path / "broken")
    assert r.returncode == 2 and "not a valid pawnet config" in r.stderr


def test_requests_that_arrive_together_share_a_batch():
    from pawnet.predictor import Outputs
    from pawnet.server import Batcher

    class Counting:
        calls = []

        def outputs(self, pixels):
            self.calls.append(len(pixels))
            return Outputs(pixels.reshape(len(pixels), -1)[:, :2].astype(np.float32))

    batcher = Batcher(Counting(), max_batch=64, wait=0.05)
    batcher.batching = True  # as when the network is busy

    async def main():
        worker = asyncio.create_task(batcher.run())
        inputs = [np.full((1, 2, 2, 3), i, np.uint8) for i in range(10)]
        outs = await asyncio.gather(*(batcher.outputs(x) for x in inputs))
        worker.cancel()
        return outs

    outs = asyncio.run(main())
    assert [int(o.probabilities[0, 0]) for o in outs] == list(range(10))  # each request gets its own answer
    assert Counting.calls == [16]  # from one forward pass, padded to a power of two


def test_schemathesis_finds_no_server_error(server, tmp_path):
    st = shutil.which("schemathesis", path=os.path.dirname(sys.executable)) or shutil.which("schemathesis")
    if not st:
        pytest.skip("schemathesis is not installed (pip install -e '.[test]')")
    r = subprocess.run(
        [
            st,
            "run",
            server.url + "/openapi.json",
            "--checks",
            "not_a_server_error",
            "--max-examples",
            "100",
            "--seed",
            "1",
            "--workers",
            "1",
            "--suppress-health-check",
            "all",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,  # where it keeps its cache
    )
    print(r.stdout[-3000:])
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]
    assert server.process.poll() is None


CHROMIUM = os.environ.get("PAWNET_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(not CHROMIUM, reason="no chromium on PATH (.ci/run installs Debian's chromium)")
def test_the_page_labels_a_photo_in_chromium(server, tmp_path):
    playwright = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    photo = tmp_path / "stripes.png"
    photo.write_bytes(png("horizontal", 3, size=120))
    OUTPUT.mkdir(exist_ok=True)
    errors = []
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu", "--no-first-run"])
        page = browser.new_page(viewport={"width": 390, "height": 844})  # a phone's width
        page.set_default_timeout(120_000)  # the first /explain loads PyTorch in the server: slow beside other tests
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.on("console", lambda msg: msg.type == "error" and errors.append(msg.text))
        page.goto(server.url + "/")
        page.wait_for_function("document.getElementById('about').textContent.includes('seed model')")
        page.keyboard.press("Tab")
        assert page.evaluate("document.activeElement.id") == "files"  # the picker is reachable by keyboard
        page.set_input_files("#files", str(photo))
        page.wait_for_function(
            "document.querySelector('.label') && document.querySelector('.label').textContent.includes('%')"
        )
        page.wait_for_function(
            "(() => { const o = document.querySelector('img.overlay'); "
            "return o && !o.hidden && o.complete && o.naturalWidth > 0; })()"
        )
        label = page.text_content(".label")
        bars = page.eval_on_selector_all(".bar .cls", "els => els.map(e => e.textContent)")
        # A photo of none of the classes, as /predict answers it.
        none_of = page.evaluate(
            "(() => { const view = card(new File([''], 'car.jpg')); showResult(view, {path: 'car.jpg', "
            "label: null, probability: null, known: false, unknown_score: 0.9, looks_like: 'sports car', "
            "probabilities: {horizontal: 0.4, vertical: 0.6}}); return view.label.textContent; })()"
        )
        overflow = page.evaluate("document.documentElement.scrollWidth > window.innerWidth")
        page.screenshot(path=str(OUTPUT / "serve.png"), full_page=True)
        browser.close()
    assert label.split()[0] in ("horizontal", "vertical")
    assert bars == ["horizontal", "vertical"]
    assert none_of == "none of: horizontal, vertical (looks like: sports car)"
    assert not overflow, "the page is wider than a phone's screen"
    assert errors == []


def test_batching_is_chosen_only_for_a_network_slow_enough_to_gain_from_it():
    from pawnet.images import Preprocessing
    from pawnet.predictor import Outputs
    from pawnet.server import Batcher

    class Timed:
        preprocessing = Preprocessing(size=8)

        def __init__(self, seconds):
            self.seconds = seconds

        def outputs(self, pixels):
            time.sleep(self.seconds)
            return Outputs(np.zeros((len(pixels), 2), np.float32))

    for seconds, expected in ((0.0, False), (0.02, True)):
        batcher = Batcher(Timed(seconds))
        asyncio.run(batcher.calibrate())
        assert batcher.batching is expected


def _stream_chunked(url: str, total: int, chunk: int = 1 << 16, seconds: float = 60) -> tuple[int, bytes, float]:
    """POST a multipart body of `total` bytes with chunked transfer encoding (no Content-Length),
    stopping as soon as an answer arrives: the bytes sent by then, the answer and the seconds taken."""
    import select

    host, port = url.removeprefix("http://").split(":")
    boundary = "pawnetboundary"
    head = f'--{boundary}\r\nContent-Disposition: form-data; name="files"; filename="big.png"\r\n\r\n'.encode()
    sent, start, answer = 0, time.monotonic(), b""
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(
            f"POST /predict HTTP/1.1\r\nHost: {host}:{port}\r\nTransfer-Encoding: chunked\r\n"
            f"Content-Type: multipart/form-data; boundary={boundary}\r\n\r\n".encode()
        )
        payload = head + b"\0" * (chunk - len(head))
        try:
            while sent < total and time.monotonic() - start < seconds:
                if select.select([sock], [], [], 0)[0]:
                    break
                sock.sendall(b"%x\r\n%s\r\n" % (len(payload), payload))
                sent += len(payload)
                payload = b"\0" * chunk
            sock.sendall(b"0\r\n\r\n")
        except OSError:  # the server closed the connection: its answer is in the socket
            pass
        try:
            while time.monotonic() - start < seconds and b"\r\n\r\n" not in answer:
                piece = sock.recv(65536)
                if not piece:
                    break
                answer += piece
        except OSError:
            pass
    return sent, answer, time.monotonic() - start


def test_a_chunked_upload_over_the_limit_is_refused_while_it_streams(server):
    sent, answer, _ = _stream_chunked(server.url, 50 * MB_)
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    # The limit is 4 MiB here; loopback's socket buffers hold a few MiB more before the answer is seen.
    assert sent < 20 * MB_, f"{sent / MB_:.0f} MiB taken in before the 413 (--max-upload-mb 1, --max-files 4)"
    assert httpx.get(server.url + "/health").status_code == 200


MB_ = 1 << 20


def test_the_request_limit_is_the_files_allowed_capped():
    from pawnet.server import request_limit_mb

    assert request_limit_mb(20, 64) == 64  # not 20 MB x 64 files
    assert request_limit_mb(1, 4) == 4
    assert request_limit_mb(100, 2) == 100  # one file of the largest size still fits


def test_a_png_over_the_servers_pixel_limit_is_refused(server):
    buf = io.BytesIO()
    Image.new("RGBA", (5000, 4000), (10, 20, 30, 40)).save(buf, format="PNG")  # 20 MP, well under Pillow's 89 MP
    r = httpx.post(server.url + "/predict", files={"files": ("wide.png", buf.getvalue())}, timeout=60)
    assert r.status_code == 422 and "pixel limit" in r.json()["detail"], r.text
    r = httpx.post(server.url + "/explain", files={"file": ("wide.png", buf.getvalue())}, timeout=60)
    assert r.status_code == 422 and "pixel limit" in r.json()["detail"], r.text


def test_decoding_runs_a_bounded_number_of_images_at_once(trained_model, monkeypatch):
    import threading

    import pawnet
    from pawnet import server as server_module

    running, most, lock = [0], [0], threading.Lock()
    real = server_module.load_pixels

    def counting(*args, **kwargs):
        with lock:
            running[0] += 1
            most[0] = max(most[0], running[0])
        time.sleep(0.05)
        with lock:
            running[0] -= 1
        return real(*args, **kwargs)

    monkeypatch.setattr(server_module, "load_pixels", counting)
    app = server_module.create_app(pawnet.load(trained_model))

    async def main():
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
                posts = [client.post("/predict", files={"files": ("a.png", png(seed=i))}) for i in range(16)]
                return await asyncio.gather(*posts)

    answers = asyncio.run(main())
    assert all(a.status_code == 200 for a in answers)
    assert 1 <= most[0] <= len(os.sched_getaffinity(0)) < 16  # one decode per core, however many requests


def test_a_foreign_host_header_is_refused(server):
    r = httpx.get(server.url + "/model", headers={"Host": "attacker.example"})
    assert r.status_code == 421 and "attacker.example" in r.json()["detail"], r.text
    for host in ("localhost", f"localhost:{server.port}", f"127.0.0.1:{server.port}", "[::1]:8000"):
        assert httpx.get(server.url + "/model", headers={"Host": host}).status_code == 200, host


@pytest.mark.parametrize(
    "allowed, host, status",
    [((), "attacker.example", 421), (("pets.example",), "pets.example:80", 200), (("*",), "attacker.example", 200)],
)
def test_allow_host_adds_names_or_turns_the_check_off(trained_model, allowed, host, status):
    import pawnet
    from pawnet.server import create_app

    app = create_app(pawnet.load(trained_model), host="127.0.0.1", allow_hosts=allowed)

    async def main():
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=f"http://{host}") as client:
            return await client.get("/health")

    assert asyncio.run(main()).status_code == status


def test_a_utf8_token_matches_what_curl_sends(trained_model):
    s = Server(trained_model, "--token", "pässwort")
    try:
        r = httpx.get(s.url + "/model", headers={"Authorization": "Bearer pässwort".encode()})
        assert r.status_code == 200, r.text
        assert httpx.get(s.url + "/model", headers={"Authorization": "Bearer passwort"}).status_code == 401
    finally:
        s.stop()


def test_explain_with_two_files_is_422(server):
    r = httpx.post(server.url + "/explain", files=[("file", ("a.png", png())), ("file", ("b.png", png(seed=1)))])
    assert r.status_code == 422 and "one image" in r.json()["detail"], r.text


def _busy_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen()
    return s


@pytest.mark.parametrize(
    "options, message",
    [
        (["--port", "99999"], "--port"),
        ("busy", "already in use"),
        (["--max-files", "0"], "--max-files"),
        (["--max-upload-mb", "0"], "--max-upload-mb"),
        (["--max-request-mb", "-1"], "--max-request-mb"),
    ],
    ids=["port-out-of-range", "port-busy", "max-files-0", "max-upload-mb-0", "max-request-mb-negative"],
)
def test_serve_refuses_bad_options_before_saying_serving(trained_model, options, message):
    busy = _busy_port() if options == "busy" else None
    if busy:
        options = ["--port", str(busy.getsockname()[1])]
    try:
        r = subprocess.run(
            [sys.executable, "-m", "pawnet", "serve", str(trained_model), *options],
            capture_output=True,
            text=True,
            timeout=300,
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"serve {' '.join(options)} started serving")
    finally:
        if busy:
            busy.close()
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    assert "serving" not in r.stdout and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert message in r.stderr, r.stderr
