"""Data-parallel scaling on this machine: images/s of `genlab train` in 1 process vs N gloo processes.

For each run (model:preset) and each layout it starts exactly what a user starts, in a subprocess:

    1 process, 1 thread     OMP_NUM_THREADS=1 python -m genlab train ...
    1 process, N threads    OMP_NUM_THREADS=N python -m genlab train ...          (all cores, one process)
    N processes, 1 thread   OMP_NUM_THREADS=1 python -m torch.distributed.run --standalone
                                --nproc_per_node=N -m genlab train ... --device cpu

with the same global batch, seed and epochs, rounds interleaved so machine noise hits every layout
alike. Images/s is the median of the run's metrics.jsonl records (training steps only: epoch-end grids
and checkpoints excluded) without the first record (warm-up), then the median over rounds; wall seconds
include start-up. On a 2-core CPU this measures what the gloo all-reduce costs against threads sharing
the same cores, not what DDP gives on GPUs.

    python benchmarks/ddp_scaling.py                          # gan:article and gan:dcgan, 2 processes
    python benchmarks/ddp_scaling.py --runs ae:default --rounds 5 --epochs 3
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]


def layouts(processes: int) -> list[tuple[str, int, int]]:
    """(label, processes, threads per process)."""
    return [
        ("1 process, 1 thread", 1, 1),
        (f"1 process, {processes} threads", 1, processes),
        (f"{processes} processes (gloo), 1 thread each", processes, 1),
    ]


def train_command(run: str, out: Path, args: argparse.Namespace, processes: int) -> list[str]:
    model, _, preset = run.partition(":")
    launcher = [sys.executable, "-m", "genlab"]
    if processes > 1:
        launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
        launcher += [f"--nproc_per_node={processes}", "-m", "genlab"]
    return launcher + [
        "train",
        "--model",
        model,
        "--preset",
        preset or "default",
        "--data",
        args.data,
        "--epochs",
        str(args.epochs),
        "--batch-size",
        str(args.batch_size),
        "--seed",
        "0",
        "--device",
        "cpu",
        "--out",
        str(out),
        "--set",
        f"log_every={args.log_every}",
        "--set",
        "grid_size=16",
    ]


def measure(run: str, processes: int, threads: int, args: argparse.Namespace, scratch: Path) -> dict:
    out = scratch / f"{run.replace(':', '-')}-{processes}x{threads}"
    shutil.rmtree(out, ignore_errors=True)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONPATH": str(REPO / "src")}
    start = time.perf_counter()
    done = subprocess.run(train_command(run, out, args, processes), env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode:
        raise SystemExit(f"{run} with {processes} process(es) failed:\n{done.stderr[-2000:]}")
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line]
    speeds = [r["images_per_sec"] for r in records if "images_per_sec" in r][1:]  # first = warm-up
    loss_keys = [k for k in records[-1] if k.startswith("loss")]
    return {
        "images_per_sec": statistics.median(speeds),
        "wall_seconds": seconds,
        "final_losses": {k: records[-1][k] for k in loss_keys},
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", nargs="+", default=["gan:article", "gan:dcgan"], help="model:preset")
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=128, help="the global batch, in every layout")
    parser.add_argument("--log-every", type=int, default=5)
    parser.add_argument("--data", default="mnist-5k")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    args = parser.parse_args()
    results: dict[str, dict[str, list[dict]]] = {run: {} for run in args.runs}
    with tempfile.TemporaryDirectory(prefix="genlab-ddp-scaling-") as scratch:
        for round_index in range(args.rounds):
            for run in args.runs:
                for label, processes, threads in layouts(args.processes):
                    figure = measure(run, processes, threads, args, Path(scratch))
                    results[run].setdefault(label, []).append(figure)
                    print(
                        f"round {round_index + 1}  {run:12s} {label:36s} "
                        f"{figure['images_per_sec']:8.0f} img/s  {figure['wall_seconds']:5.1f}s wall",
                        flush=True,
                    )
    rows = []
    for run, by_layout in results.items():
        base = None
        for label, figures in by_layout.items():
            speed = statistics.median(f["images_per_sec"] for f in figures)
            base = base or speed
            rows.append(
                {
                    "run": run,
                    "layout": label,
                    "images_per_sec": round(speed, 1),
                    "vs_1_process_1_thread": round(speed / base, 3),
                    "wall_seconds": round(statistics.median(f["wall_seconds"] for f in figures), 1),
                    "rounds": [f["images_per_sec"] for f in figures],
                    "final_losses": figures[0]["final_losses"],
                }
            )
    machine = {
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    }
    report = {"machine": machine, "settings": {k: str(v) for k, v in vars(args).items()}, "rows": rows}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "ddp_scaling.json").write_text(json.dumps(report, indent=2) + "\n")
    lines = [
        f"DDP scaling, {machine['cores']} cores, torch {machine['torch']}, {machine['date']}; global batch "
        f"{args.batch_size}, {args.epochs} epochs of {args.data}, median of {args.rounds} interleaved rounds",
        "",
        "| run | layout | images/s | vs 1 process, 1 thread | wall s (start-up included) |",
        "|---|---|---:|---:|---:|",
    ]
    for row in rows:
        lines.append(
            f"| {row['run']} | {row['layout']} | {row['images_per_sec']:,.0f} | "
            f"{row['vs_1_process_1_thread']:.2f}x | {row['wall_seconds']:.1f} |"
        )
    (args.out / "ddp_scaling.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
