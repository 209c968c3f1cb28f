"""`pawnet data download` against a real HTTP server on a loopback port, serving archives made here."""

import errno
import hashlib
import io
import socket
import tarfile
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from conftest import pattern, run_cli
from PIL import Image

from pawnet import download as dl
from pawnet.errors import DownloadError, UserError


def _png(kind, seed):
    buf = io.BytesIO()
    Image.fromarray(pattern(kind, 48, seed)).save(buf, format="PNG")
    return buf.getvalue()


def make_zip(extra: dict | None = None) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for cls, kind in (("Cat", "horizontal"), ("Dog", "vertical")):
            for i in range(10):
                zf.writestr(f"PetImages/{cls}/{i}.jpg", _png(kind, i))
        zf.writestr("PetImages/Cat/666.jpg", b"")  # an empty file, as the real release has
        for name, data in (extra or {}).items():
            zf.writestr(name, data)
    return buf.getvalue()


class Server:
    """Serves one payload with Range support; `cut_after` drops the first connection early."""

    def __init__(self, payload: bytes, cut_after: int | None = None):
        self.payload, self.cut_after, self.ranges = payload, cut_after, []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                start = 0
                if "Range" in self.headers:
                    start = int(self.headers["Range"].split("=")[1].split("-")[0])
                server.ranges.append(start)
                body = server.payload[start:]
                self.send_response(206 if start else 200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if server.cut_after is not None:
                    self.wfile.write(body[: server.cut_after])
                    server.cut_after = None
                    self.close_connection = True
                    return
                self.wfile.write(body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/pets.zip"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def serve():
    servers = []

    def start(payload, cut_after=None):
        servers.append(Server(payload, cut_after))
        return servers[-1]

    yield start
    for s in servers:
        s.close()


def test_download_extract_quarantine_and_split(serve, tmp_path):
    payload = make_zip()
    server = serve(payload)
    out = dl.download(tmp_path, server.url, sha256=hashlib.sha256(payload).hexdigest(), split=0.2, log=lambda *_: None)
    assert out == tmp_path / "pets"
    for cls in ("cat", "dog"):
        assert len(list((out / "training_set" / cls).iterdir())) == 8
        assert len(list((out / "test_set" / cls).iterdir())) == 2
    assert (tmp_path / "pets.quarantine" / "cat" / "666.jpg").exists()
    assert "666.jpg" in (tmp_path / "pets.quarantine" / "manifest.json").read_text()
    assert (tmp_path / "pets.zip.sha256").read_text().startswith(hashlib.sha256(payload).hexdigest())


def test_interrupted_transfer_resumes(serve, tmp_path):
    payload = make_zip()
    server = serve(payload, cut_after=1000)
    with pytest.raises(DownloadError, match="partial download is kept|connection closed"):
        dl.fetch(server.url, tmp_path / "pets.zip", log=lambda *_: None)
    assert (tmp_path / "pets.zip.part").stat().st_size == 1000
    dl.fetch(server.url, tmp_path / "pets.zip", sha256=hashlib.sha256(payload).hexdigest(), log=lambda *_: None)
    assert server.ranges == [0, 1000]
    assert (tmp_path / "pets.zip").read_bytes() == payload


def test_wrong_checksum_keeps_the_file_aside(serve, tmp_path):
    server = serve(make_zip())
    with pytest.raises(DownloadError, match="checksum mismatch"):
        dl.fetch(server.url, tmp_path / "pets.zip", sha256="0" * 64, log=lambda *_: None)
    assert (tmp_path / "pets.zip.bad").exists() and not (tmp_path / "pets.zip").exists()


def test_corrupt_archive_is_one_line(serve, tmp_path):
    server = serve(b"PK\x03\x04" + b"\x00" * 200)
    result = run_cli("data", "download", tmp_path, "--source", server.url)
    assert result.returncode == 2 and "pets.zip" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize("kind", ["zip", "tar"])
def test_path_traversal_entries_are_refused(serve, tmp_path, kind):
    if kind == "zip":
        payload = make_zip({"../../evil.txt": b"owned"})
    else:
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as tf:
            info = tarfile.TarInfo("../evil.txt")
            info.size = 5
            tf.addfile(info, io.BytesIO(b"owned"))
        payload = buf.getvalue()
    server = serve(payload)
    with pytest.raises(UserError, match="refused"):
        dl.download(tmp_path / "dest", server.url, log=lambda *_: None)
    assert not list(tmp_path.rglob("evil.txt"))


def test_disk_full_keeps_the_partial_file(serve, tmp_path, monkeypatch):
    server = serve(make_zip())
    real_open = open

    class FullDisk:
        def __init__(self, f):
            self.f, self.written = f, 0

        def write(self, data):
            if self.written:
                raise OSError(errno.ENOSPC, "No space left on device")
            self.written += len(data)
            return self.f.write(data[:100])

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.f.close()

    monkeypatch.setattr(dl, "CHUNK", 100)
    monkeypatch.setattr(dl, "open", lambda p, mode="r", *a, **k: FullDisk(real_open(p, mode)) if "a" in mode or "w" in mode else real_open(p, mode, *a, **k), raising=False)
    with pytest.raises(DownloadError, match="No space left"):
        dl.fetch(server.url, tmp_path / "pets.zip", log=lambda *_: None)
    assert (tmp_path / "pets.zip.part").exists()


def test_network_failure_exits_1_with_one_line(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again when the block ends: nothing listens there
    result = run_cli("data", "download", tmp_path, "--source", f"http://127.0.0.1:{port}/pets.zip")
    assert result.returncode == 1, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr
