"""Load on `pawnet serve`: 32 clients posting real photos for 30 seconds, on loopback.

    python benchmarks/serve_load.py [--model DIR] [--photos DIR] [--clients 32] [--seconds 30]

Starts the server on a free loopback port (with no --model: a seed network trained for three
epochs on the shared photos, in a temporary folder), then runs the clients, each posting one
photo at a time, plus a probe that asks /health four times a second throughout. Stops by itself
after --seconds or --max-requests, following a 3-second warm-up at the same concurrency. Prints
requests/s, latency percentiles, errors, the /health probe's record and the server's resident
memory before and after.
Targets: 0 errors, p99 under 1 s (seed model), RSS growth under 50 MB per 10,000 requests,
/health answered throughout.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

from photos import DEFAULT_DATA


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def client(http, url, photos, stop_at, budget, latencies, errors):
    while time.monotonic() < stop_at and budget[0] > 0:
        budget[0] -= 1
        name, data = next(photos)
        t = time.perf_counter()
        try:
            r = await http.post(url + "/predict", files={"files": (name, data, "image/jpeg")})
            if r.status_code != 200:
                errors.append(f"{r.status_code} {r.text[:100]}")
        except httpx.HTTPError as e:
            errors.append(f"{type(e).__name__}: {e}")
        latencies.append(time.perf_counter() - t)


async def health_probe(http, url, stop_at, record):
    while time.monotonic() < stop_at:
        t = time.perf_counter()
        try:
            ok = (await http.get(url + "/health", timeout=5)).status_code == 200
        except httpx.HTTPError:
            ok = False
        record.append((ok, time.perf_counter() - t))
        await asyncio.sleep(0.25)


async def load(url, photos, clients, seconds, max_requests):
    latencies, errors, health = [], [], []
    limits = httpx.Limits(max_connections=clients + 1, max_keepalive_connections=clients + 1)
    async with httpx.AsyncClient(timeout=30, limits=limits) as http:
        stop_at = time.monotonic() + seconds
        budget = [max_requests]
        start = time.perf_counter()
        await asyncio.gather(
            health_probe(http, url, stop_at, health),
            *(client(http, url, photos, stop_at, budget, latencies, errors) for _ in range(clients)),
        )
        elapsed = time.perf_counter() - start
    return latencies, errors, health, elapsed


def train_seed_model(folder: Path) -> Path:
    out = folder / "seed"
    subprocess.run(
        [sys.executable, "-m", "pawnet", "train", str(DEFAULT_DATA), "--epochs", "3", "--out", str(out)],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", type=Path)
    p.add_argument("--photos", type=Path, default=DEFAULT_DATA / "test_set")
    p.add_argument("--clients", type=int, default=32)
    p.add_argument("--seconds", type=float, default=30)
    p.add_argument("--max-requests", type=int, default=100_000)
    args = p.parse_args()
    files = sorted(args.photos.rglob("*.jpg"))
    if not files:
        print(f"no photos in {args.photos}", file=sys.stderr)
        return 2
    photos = itertools.cycle([(f.name, f.read_bytes()) for f in files])
    with tempfile.TemporaryDirectory() as tmp:
        model = args.model or train_seed_model(Path(tmp))
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        server = subprocess.Popen(
            [sys.executable, "-m", "pawnet", "serve", str(model), "--port", str(port)], stdout=subprocess.DEVNULL
        )
        try:
            for _ in range(300):
                try:
                    if httpx.get(url + "/health", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    time.sleep(0.2)
            # Warm up at the same concurrency, so that what the first requests import and the
            # kernels each batch size allocates once are in place, then measure.
            asyncio.run(load(url, photos, args.clients, 3, 2_000))
            before = rss_mb(server.pid)
            latencies, errors, health, elapsed = asyncio.run(
                load(url, photos, args.clients, args.seconds, args.max_requests)
            )
            after = rss_mb(server.pid)
            alive = server.poll() is None
        finally:
            server.terminate()
            server.wait(timeout=30)
    n = len(latencies)
    ms = np.percentile(np.asarray(latencies) * 1000, [50, 95, 99])
    health_ok = sum(ok for ok, _ in health)
    print(f"model                {model if args.model else 'seed network (3 epochs)'}")
    print(f"load                 {args.clients} clients for {elapsed:.1f} s, one {files[0].suffix} photo per request")
    print(f"requests             {n:,}  ({n / elapsed:,.0f} requests/s)")
    print(
        f"latency              p50 {ms[0]:.0f} ms   p95 {ms[1]:.0f} ms   p99 {ms[2]:.0f} ms   "
        f"max {max(latencies) * 1000:.0f} ms"
    )
    print(f"errors               {len(errors)}" + (f"  (first: {errors[0]})" if errors else ""))
    print(
        f"/health during load  {health_ok} of {len(health)} answered 200, "
        f"slowest {max(t for _, t in health) * 1000:.0f} ms"
    )
    print(
        f"server RSS           {before:.0f} MB before, {after:.0f} MB after: {after - before:+.1f} MB, "
        f"{(after - before) / max(n, 1) * 10_000:+.1f} MB per 10,000 requests; "
        f"server {'still running' if alive else 'DIED'}"
    )
    return 0 if not errors and alive else 1


if __name__ == "__main__":
    raise SystemExit(main())
