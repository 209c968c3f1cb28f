"""Peak memory of `pawnet serve` under concurrent uploads of the worst images, and how far a
chunked upload over the limit gets before the answer.

    python benchmarks/serve_memory.py [--model DIR|FILE] [--concurrency 16] [--rss-cap-mb 6000] [--checkout DIR]

Images: for each worst file (a 9,400 x 9,400 RGBA PNG of a few hundred KB, and a 9,400 x 9,400
progressive JPEG), starts a fresh server on a free loopback port, posts the file `--concurrency`
times at once to /predict and prints the answers' statuses, the seconds taken and the server's
peak resident memory (VmHWM in /proc/PID/status). A watchdog kills the server if its memory
passes `--rss-cap-mb`, so the machine is never run out of memory; the figure is then marked
"over the cap".
Chunked: a server with `--max-upload-mb 1` gets a POST of `--chunked-mb` (300) MiB with chunked
transfer encoding (no Content-Length); prints the MiB sent before the answer came, the answer's
status and the seconds taken.
The server runs the pawnet of `--checkout` (default: this one), so the same script measures two
checkouts: `--checkout ../main-copy` for the code before a change.
"""

from __future__ import annotations

import argparse
import io
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

MB = 1 << 20
CHECKOUT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def memory_mb(pid: int, field: str) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def worst_files(side: int = 9400) -> dict[str, bytes]:
    """A smooth RGBA PNG (it compresses to almost nothing) and a progressive JPEG, `side` pixels square."""
    ramp = np.linspace(0, 255, side, dtype=np.float32)
    rgb = np.stack(np.broadcast_arrays(ramp[None, :], ramp[:, None], 128 + 0 * ramp[None, :]), -1).astype(np.uint8)
    files = {}
    buf = io.BytesIO()
    Image.fromarray(np.dstack([rgb, np.full((side, side), 200, np.uint8)]), "RGBA").save(buf, "PNG", compress_level=9)
    files[f"{side}x{side} RGBA PNG"] = buf.getvalue()
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, "JPEG", quality=90, progressive=True)
    files[f"{side}x{side} progressive JPEG"] = buf.getvalue()
    return files


class Served:
    """`pawnet serve` on a free loopback port, with a watchdog on its memory."""

    def __init__(self, model, options, cap_mb: float, checkout: Path):
        self.port, self.cap_mb, self.over_cap = free_port(), cap_mb, False
        self.url = f"http://127.0.0.1:{self.port}"
        command = [sys.executable, "-m", "pawnet", "serve", *([model] if model else []), "--port", str(self.port)]
        self.process = subprocess.Popen(
            [*command, *options],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            cwd=checkout,
            env={**os.environ, "PYTHONPATH": str(checkout)},
        )
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and self.process.poll() is None:
            try:
                if httpx.get(self.url + "/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        else:
            self.stop()
            raise SystemExit("the server did not start within 120 s")
        self.watching = True
        threading.Thread(target=self.watch, daemon=True).start()

    def watch(self) -> None:
        while self.watching and self.process.poll() is None:
            if memory_mb(self.process.pid, "VmRSS") > self.cap_mb:
                self.over_cap = True
                self.process.send_signal(signal.SIGKILL)
                return
            time.sleep(0.01)

    def stop(self) -> None:
        self.watching = False
        if self.process.poll() is None:
            self.process.terminate()
        self.process.wait(timeout=60)


def upload_peak(model, name: str, data: bytes, concurrency: int, cap_mb: float, checkout: Path) -> None:
    server = Served(model, [], cap_mb, checkout)
    idle = memory_mb(server.process.pid, "VmRSS")
    statuses: list = [None] * concurrency

    def post(i):
        try:
            r = httpx.post(server.url + "/predict", files={"files": ("worst", data)}, timeout=300)
            statuses[i] = r.status_code if r.status_code == 200 else f"{r.status_code} {r.json()['detail'][:90]}"
        except httpx.HTTPError as e:
            statuses[i] = type(e).__name__

    start = time.monotonic()
    threads = [threading.Thread(target=post, args=(i,)) for i in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=600)
    seconds = time.monotonic() - start
    peak = memory_mb(server.process.pid, "VmHWM") if server.process.poll() is None else float("nan")
    over = server.over_cap
    server.stop()
    counts = {s: statuses.count(s) for s in set(statuses)}
    peak_text = f"over the {cap_mb:.0f} MB cap (killed)" if over else f"{peak:.0f} MB"
    print(
        f"{name} ({len(data) / 1000:.0f} KB) x {concurrency} at once: idle RSS {idle:.0f} MB, "
        f"peak RSS {peak_text}; answers {counts}; {seconds:.1f} s"
    )


def chunked(model, total_mb: int, cap_mb: float, checkout: Path) -> None:
    server = Served(model, ["--max-upload-mb", "1"], cap_mb, checkout)
    boundary = "pawnetboundary"
    head = f'--{boundary}\r\nContent-Disposition: form-data; name="files"; filename="big.png"\r\n\r\n'.encode()
    sent, answer, start = 0, b"", time.monotonic()
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(
            f"POST /predict HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\nTransfer-Encoding: chunked\r\n"
            f"Content-Type: multipart/form-data; boundary={boundary}\r\n\r\n".encode()
        )
        payload = head + b"\0" * (65536 - len(head))
        try:
            while sent < total_mb * MB and time.monotonic() - start < 120:
                if select.select([sock], [], [], 0)[0]:
                    break
                sock.sendall(b"%x\r\n%s\r\n" % (len(payload), payload))
                sent += len(payload)
                payload = b"\0" * 65536
            sock.sendall(b"0\r\n\r\n")
        except OSError:
            pass
        try:
            while b"\r\n\r\n" not in answer and time.monotonic() - start < 120:
                piece = sock.recv(65536)
                if not piece:
                    break
                answer += piece
        except OSError:
            pass
    seconds = time.monotonic() - start
    peak = memory_mb(server.process.pid, "VmHWM")
    server.stop()
    status = answer.split(b"\r\n", 1)[0].decode(errors="replace") or "(no answer)"
    print(
        f"chunked POST of {total_mb} MiB to --max-upload-mb 1: {sent / MB:.1f} MiB sent before the answer "
        f"'{status}' after {seconds:.2f} s; server peak RSS {peak:.0f} MB"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="model directory or .onnx file (default: the shipped model)")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--rss-cap-mb", type=float, default=6000)
    parser.add_argument("--chunked-mb", type=int, default=300)
    parser.add_argument("--side", type=int, default=9400)
    parser.add_argument("--checkout", type=Path, default=CHECKOUT, help="the pawnet checkout the server runs")
    args = parser.parse_args()
    checkout = args.checkout.resolve()
    print(f"server runs pawnet from {checkout}; {len(os.sched_getaffinity(0))} CPUs")
    for name, data in worst_files(args.side).items():
        upload_peak(args.model, name, data, args.concurrency, args.rss_cap_mb, checkout)
    chunked(args.model, args.chunked_mb, args.rss_cap_mb, checkout)


if __name__ == "__main__":
    main()
