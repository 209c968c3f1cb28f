"""`pawnet data download` against a real HTTP server on a loopback port, serving archives made here."""

import errno
import hashlib
import io
import json
import socket
import tarfile
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from PIL import Image

from pawnet import download as dl
from pawnet.errors import DownloadError, UserError

from conftest import pattern, run_cli


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
    """Serves one payload with Range, If-Range and ETag support, as a real server would.

    `cut_after` drops the first connection after that many bytes of the body; `chunked` sends
    that body in one chunk of the payload's length (so a cut lands mid-chunk)."""

    def __init__(self, payload: bytes, cut_after: int | None = None, chunked: bool = False, path: str = "/pets.zip"):
        self.payload, self.cut_after, self.chunked, self.ranges = payload, cut_after, chunked, []
        self.etag = '"1"'
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_GET(self):
                start, size = 0, len(server.payload)
                if "Range" in self.headers and self.headers.get("If-Range", server.etag) == server.etag:
                    start = int(self.headers["Range"].split("=")[1].split("-")[0])
                server.ranges.append(start)
                if start >= size and start:
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{size}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                body = server.payload[start:]
                self.send_response(206 if start else 200)
                self.send_header("ETag", server.etag)
                if start:
                    self.send_header("Content-Range", f"bytes {start}-{size - 1}/{size}")
                if server.chunked:
                    self.send_header("Transfer-Encoding", "chunked")
                else:
                    self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if server.chunked:
                    self.wfile.write(f"{len(body):x}\r\n".encode())
                if server.cut_after is not None:
                    self.wfile.write(body[: server.cut_after])
                    server.cut_after = None
                    self.close_connection = True
                    return
                self.wfile.write(body)
                if server.chunked:
                    self.wfile.write(b"\r\n0\r\n\r\n")

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}{path}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def serve():
    servers = []

    def start(payload, cut_after=None, **options):
        servers.append(Server(payload, cut_after, **options))
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
    assert (tmp_path / "pets.quarantine" / "training_set" / "cat" / "666.jpg").exists()
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
    monkeypatch.setattr(
        dl,
        "open",
        lambda p, mode="r", *a, **k: (
            FullDisk(real_open(p, mode)) if "a" in mode or "w" in mode else real_open(p, mode, *a, **k)
        ),
        raising=False,
    )
    with pytest.raises(DownloadError, match="No space left"):
        dl.fetch(server.url, tmp_path / "pets.zip", log=lambda *_: None)
    assert (tmp_path / "pets.zip.part").exists()


def test_network_failure_exits_1_with_one_line(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, so no one else gets it, but nothing listens there
        result = run_cli("data", "download", tmp_path, "--source", f"http://127.0.0.1:{port}/pets.zip")
    assert result.returncode == 1, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr


def _zip(entries: dict) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
    return buf.getvalue()


def test_same_names_in_subfolders_of_a_class_are_all_kept(serve, tmp_path):
    entries = {
        f"Pets/Cat/{where}/{i}.jpg": _png("horizontal", 10 * (where == "indoor") + i)
        for where in ("indoor", "outdoor")
        for i in range(8)
    }
    entries |= {f"Pets/Dog/{i}.jpg": _png("vertical", i) for i in range(10)}
    entries |= {"Pets/Cat/indoor/bad.jpg": b"", "Pets/Cat/outdoor/bad.jpg": b"\xff\xd8 cut short"}
    server = serve(_zip(entries))
    messages = []
    out = dl.download(tmp_path, server.url, log=messages.append)
    assert len([f for f in out.rglob("*") if f.is_file() and "cat" in f.relative_to(out).parts]) == 16
    assert any("cat 13 training + 3 test" in m for m in messages)
    quarantined = json.loads((tmp_path / "pets.quarantine" / "manifest.json").read_text())
    assert len(quarantined) == 2 and len(list((tmp_path / "pets.quarantine").rglob("bad.jpg"))) == 2
    assert not (tmp_path / "pets.extracted").exists()


def test_restore_after_download_and_fix_puts_everything_back(serve, tmp_path):
    server = serve(make_zip({"PetImages/Cat/copy.jpg": _png("horizontal", 0)}))
    out = dl.download(tmp_path, server.url, log=lambda *_: None)
    fix = run_cli("data", "check", out, "--fix")
    assert fix.returncode == 0, fix.stderr
    assert len(json.loads((tmp_path / "pets.quarantine" / "manifest.json").read_text())) == 2
    result = run_cli("data", "restore", out)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "restored 2 files"
    assert sorted(
        f.name
        for f in out.rglob("*")
        if f.is_file() and f.parent.name == "cat" and f.name in ("0.jpg", "copy.jpg", "666.jpg")
    ) == ["0.jpg", "666.jpg", "copy.jpg"]


def test_an_archive_in_the_tutorials_layout_keeps_its_split(serve, tmp_path):
    entries = {}
    for split, n in (("training_set", 6), ("test_set", 2)):
        for cls, kind in (("cats", "horizontal"), ("dogs", "vertical")):
            entries |= {
                f"dataset/{split}/{cls}/{cls}.{i}.jpg": _png(kind, i + 100 * (split == "test_set")) for i in range(n)
            }
    entries["dataset/single_prediction/cat_or_dog_1.jpg"] = _png("horizontal", 999)
    server = serve(_zip(entries), path="/dataset.zip")
    out = dl.download(tmp_path, server.url, log=lambda *_: None)
    assert sorted(p.relative_to(out).as_posix() for p in out.glob("*/*")) == [
        "test_set/cats",
        "test_set/dogs",
        "training_set/cats",
        "training_set/dogs",
    ]
    assert (
        len(list((out / "training_set" / "cats").iterdir())) == 6
        and len(list((out / "test_set" / "dogs").iterdir())) == 2
    )


def test_416_for_a_partial_file_of_another_archive_starts_again(serve, tmp_path):
    payload = make_zip()
    server = serve(payload)
    (tmp_path / "pets.zip.part").write_bytes(b"an older, longer download" * 10_000)
    dl.fetch(server.url, tmp_path / "pets.zip", log=lambda *_: None)
    assert (tmp_path / "pets.zip").read_bytes() == payload


def test_a_partial_file_of_an_archive_since_replaced_is_not_resumed(serve, tmp_path):
    old, new = _zip({"Pets/Cat/0.jpg": _png("horizontal", 5), "Pets/Dog/0.jpg": _png("vertical", 5)}), make_zip()
    server = serve(old, cut_after=1000)
    with pytest.raises(DownloadError):
        dl.fetch(server.url, tmp_path / "pets.zip", log=lambda *_: None)
    server.payload, server.etag = new, '"2"'
    dl.fetch(server.url, tmp_path / "pets.zip", log=lambda *_: None)
    assert (tmp_path / "pets.zip").read_bytes() == new


def test_a_chunked_transfer_cut_mid_chunk_keeps_what_arrived(serve, tmp_path):
    payload = make_zip()
    server = serve(payload, cut_after=100, chunked=True)
    result = run_cli("data", "download", tmp_path, "--source", server.url)
    assert result.returncode == 1 and "partial download is kept" in result.stderr and "unexpected" not in result.stderr
    assert (tmp_path / "pets.zip.part").stat().st_size == 100
    dl.fetch(server.url, tmp_path / "pets.zip", log=lambda *_: None)
    assert server.ranges == [0, 100] and (tmp_path / "pets.zip").read_bytes() == payload


def test_a_url_without_a_file_name_gets_one(serve, tmp_path):
    server = serve(make_zip(), path="/")
    out = dl.download(tmp_path / "dest", server.url, log=lambda *_: None)
    assert out == tmp_path / "dest" / "download" and (out / "training_set").is_dir()


def test_a_decompression_bomb_is_refused(serve, tmp_path):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for i in range(2):
            zf.writestr(f"PetImages/Dog/{i}.jpg", _png("vertical", i))
        with zf.open("PetImages/Cat/huge.bmp", "w") as fh:  # 64 MiB of zeros in about 64 KB
            for _ in range(64):
                fh.write(bytes(1 << 20))
    server = serve(buf.getvalue())
    result = run_cli("data", "download", tmp_path, "--source", server.url)
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("pawnet: error: ") and "refused" in result.stderr and "expand" in result.stderr
    assert not list(tmp_path.rglob("huge.bmp"))
