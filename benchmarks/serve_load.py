"""Load test of `genlab serve`: a real uvicorn on 127.0.0.1, many concurrent clients for a bounded time.

    python benchmarks/serve_load.py --clients 200 --seconds 30

The server runs as `python -m genlab serve` in its own process; this process is the clients (asyncio +
httpx), each sending requests back to back: samples (n=16), latent walks (strips and single frames),
uploads to reconstruct, run listings. A client answered 429 waits a jittered 50-150 ms and goes on, as
a polite client would. Reported: requests/s (successful), p50/p99 latency of successful requests, the
429 count, errors (anything else: other statuses, refused connections, timeouts; must be 0) and the
server's peak RSS (VmHWM). Without --runs it trains one-epoch runs of the default presets (gan, vae,
denoising ae) into --work: the weights' quality does not change the cost of inference.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np

MIX = (("sample", 0.55), ("strip", 0.15), ("frame", 0.10), ("reconstruct", 0.15), ("list", 0.05))


@dataclass
class LoadResult:
    seconds: float = 0.0
    ok: int = 0
    busy: int = 0  # deliberate 429s
    errors: int = 0
    error_kinds: dict[str, int] = field(default_factory=dict)
    latencies_ms: list[float] = field(default_factory=list)
    by_kind: dict[str, list[float]] = field(default_factory=dict)  # successful latencies per request kind

    def summary(self) -> dict:
        latencies = np.array(self.latencies_ms) if self.latencies_ms else np.array([float("nan")])
        return {
            "seconds": round(self.seconds, 2),
            "requests_ok": self.ok,
            "requests_per_s": round(self.ok / self.seconds, 1) if self.seconds else 0.0,
            "p50_ms": round(float(np.percentile(latencies, 50)), 1),
            "p99_ms": round(float(np.percentile(latencies, 99)), 1),
            "status_429": self.busy,
            "errors": self.errors,
            "error_kinds": self.error_kinds,
            "ok_by_kind": {kind: len(times) for kind, times in sorted(self.by_kind.items())},
            "p50_ms_by_kind": {
                kind: round(float(np.percentile(times, 50)), 1)
                for kind, times in sorted(self.by_kind.items())
            },
        }


def digit_png() -> bytes:
    """A drawn '0' on black, as the page's canvas would send it."""
    from PIL import Image, ImageDraw

    image = Image.new("L", (224, 224), 0)
    ImageDraw.Draw(image).ellipse((60, 30, 164, 194), outline=255, width=20)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


async def run_load(base_url: str, clients: int, seconds: float, seed: int = 0) -> LoadResult:
    """`clients` concurrent clients against base_url for `seconds`; every response is classified."""
    result = LoadResult()
    upload = digit_png()
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=base_url, limits=limits, timeout=60.0) as client:
        listing = (await client.get("/api/runs")).json()["runs"]
        details = [(await client.get(f"/api/runs/{run['name']}")).json() for run in listing]
        encoders = [d["name"] for d in details if d["can_reconstruct"]]
        classes = {d["name"]: d["num_classes"] for d in details if d["conditional"]}
        deadline = time.perf_counter() + seconds

        async def one_client(index: int) -> None:
            rng = random.Random(seed * 100_003 + index)
            kinds, weights = zip(*MIX)
            while time.perf_counter() < deadline:
                kind = rng.choices(kinds, weights)[0]
                if kind == "reconstruct" and not encoders:
                    kind = "sample"
                name = rng.choice(encoders if kind == "reconstruct" else [d["name"] for d in details])
                started = time.perf_counter()
                try:
                    response = await send(client, kind, name, rng, upload, classes.get(name))
                except httpx.HTTPError as exc:
                    result.errors += 1
                    label = type(exc).__name__
                    result.error_kinds[label] = result.error_kinds.get(label, 0) + 1
                    continue
                elapsed_ms = 1000 * (time.perf_counter() - started)
                if response.status_code == 200:
                    result.ok += 1
                    result.latencies_ms.append(elapsed_ms)
                    result.by_kind.setdefault(kind, []).append(elapsed_ms)
                elif response.status_code == 429:
                    result.busy += 1
                    await asyncio.sleep(rng.uniform(0.05, 0.15))
                else:
                    result.errors += 1
                    label = f"{kind} {response.status_code}"
                    result.error_kinds[label] = result.error_kinds.get(label, 0) + 1

        started = time.perf_counter()
        await asyncio.gather(*(one_client(i) for i in range(clients)))
        result.seconds = time.perf_counter() - started
    return result


async def send(
    client: httpx.AsyncClient, kind: str, name: str, rng: random.Random, upload: bytes, classes: int | None
):
    """One request of the given kind; class-conditional runs get a random class where one is needed."""
    seed = rng.randrange(1_000_000)
    if kind == "sample":
        return await client.post(f"/api/runs/{name}/sample", json={"n": 16, "seed": seed})
    if kind == "strip":
        return await client.post(f"/api/runs/{name}/interpolate", json={"seed_a": seed, "seed_b": seed + 1})
    if kind == "frame":
        body = {"seed_a": seed, "seed_b": seed + 1, "t": rng.random()}
        return await client.post(f"/api/runs/{name}/interpolate", json=body)
    if kind == "reconstruct":
        files = {"file": ("digit.png", upload, "image/png")}
        data = (
            {"seed": str(seed)}
            if classes is None
            else {"seed": str(seed), "label": str(rng.randrange(classes))}
        )
        return await client.post(f"/api/runs/{name}/reconstruct", files=files, data=data)
    return await client.get("/api/runs")


def peak_rss_mib(pid: int) -> float | None:
    """The process's peak resident set size (VmHWM, Linux), in MiB."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_server(runs: list[str], port: int, workers: int, queue: int) -> subprocess.Popen:
    command = [sys.executable, "-m", "genlab", "serve", *runs, "--port", str(port)]
    command += ["--workers", str(workers), "--queue", str(queue)]
    server = subprocess.Popen(command)
    deadline = time.time() + 120
    while time.time() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"the server exited with code {server.returncode}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/api/health", timeout=1).status_code == 200:
                return server
        except httpx.HTTPError:
            time.sleep(0.2)
    server.kill()
    raise SystemExit("the server did not start within 120 s")


def train_default_runs(work: Path) -> list[str]:
    """One epoch of each default preset (gan, vae, denoising ae): real sizes, quick to make."""
    import genlab

    recipes = {
        "gan": {"model": "gan"},
        "vae": {"model": "vae"},
        "dae": {"model": "ae", "preset": "denoising"},
    }
    runs = []
    for name, recipe in recipes.items():
        if not (work / name / "config.json").is_file():
            genlab.train({**recipe, "epochs": 1}, out=work / name)
        runs.append(f"{name}={work / name}")
    return runs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", nargs="*", help="run dirs or name=dir (default: train one-epoch runs)")
    parser.add_argument("--work", default="benchmarks/out/serve-runs")
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--queue", type=int, default=32)
    parser.add_argument("--out", default="benchmarks/results/serve_load.json")
    args = parser.parse_args(argv)

    runs = args.runs or train_default_runs(Path(args.work))
    port = free_port()
    server = start_server(runs, port, args.workers, args.queue)
    try:
        idle_rss = peak_rss_mib(server.pid)
        result = asyncio.run(run_load(f"http://127.0.0.1:{port}", args.clients, args.seconds))
        alive = httpx.get(f"http://127.0.0.1:{port}/api/health", timeout=5).status_code == 200
        summary = {
            **result.summary(),
            "clients": args.clients,
            "workers": args.workers,
            "queue": args.queue,
            "server_peak_rss_mib_at_start": idle_rss and round(idle_rss, 1),
            "server_peak_rss_mib": round(peak_rss_mib(server.pid) or float("nan"), 1),
            "server_answers_after": alive,
            "runs": runs,
            "cpu_count": os.cpu_count(),
            "date": time.strftime("%Y-%m-%d"),
        }
    finally:
        server.send_signal(signal.SIGINT)
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.kill()
    print(json.dumps(summary, indent=2))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(summary, indent=2) + "\n")
    return 0 if summary["errors"] == 0 and summary["server_answers_after"] else 1


if __name__ == "__main__":
    sys.exit(main())
