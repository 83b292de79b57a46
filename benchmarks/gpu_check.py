"""One GPU check of genlab's training speed, in under 5 minutes on one H100/H200 (benchmarks/gpu_check.sh).

For each family of benchmarks/speed.py (the article's MLP GAN, the default GAN, the DCGAN conv GAN, the
MLP VAE) and each batch size (128 to 8192) it trains with genlab's Trainer, the `genlab train` code path,
on a synthetic MNIST-shaped set resident on the device, in fp32 and in bf16 autocast, and reports
images/s over the steps after a warm-up, the seconds a 60,000-image epoch takes at that rate (steps
only: the per-epoch grid and checkpoint are extra), and the peak device memory. Then, time allowing,
one torch.compile row per family (on CUDA: mode reduce-overhead, i.e. CUDA graphs, the shapes being
static). In between it checks that CPU and device runs give the same losses over a few steps, within
a stated tolerance (random draws are taken on the CPU for both, dropout off, TF32 off).

    benchmarks/gpu_check.sh                           # on the GPU machine: JSON + markdown table
    python benchmarks/gpu_check.py --device cpu --tiny   # the dry run the tests do (seconds)

Targets (issue 9): a DCGAN-sized conv GAN's 60k-image epoch in <= 1 s; the article's MLP GAN at
>= 1,000,000 images/s at large batch. A row that fails (e.g. a compile error) records its error and
the check goes on; a row that would start after --budget-s is listed as skipped.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import tempfile
import time
import traceback
from datetime import datetime, timezone
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from families import machine  # noqa: E402
from speed import CASES, synthetic_dataset, time_genlab  # noqa: E402

TARGETS = {  # case -> (what, check on its best row)
    "gan-dcgan": ("60k-image epoch <= 1 s", lambda row: row["epoch_s"] <= 1.0),
    "gan-article": (">= 1,000,000 images/s", lambda row: row["images_per_s"] >= 1e6),
}
AGREEMENT_RTOL, AGREEMENT_ATOL = 1e-3, 1e-4  # fp32, a few steps: only summation order differs


def speed_rows(args, deadline: float, compiled: bool = False) -> list[dict]:
    """Eager rows (every case, precision and batch size) or, with `compiled`, one compiled row per case."""
    rows = []
    if compiled:
        plan = [(name, args.compile_batch, args.precisions[-1], True) for name in args.cases]
    else:
        plan = [(n, b, p, False) for n in args.cases for p in args.precisions for b in args.batch_sizes]
    for name, batch, precision, compiled in plan:
        row = {"case": name, "batch_size": batch, "precision": precision, "compile": compiled}
        if time.perf_counter() > deadline:
            rows.append({**row, "skipped": "time budget spent"})
            continue
        steps = max(args.min_steps, min(args.max_steps, args.epoch_images // batch))
        warmup = args.warmup + (args.compile_warmup if compiled else 0)
        if args.device.startswith("cuda"):
            torch.cuda.reset_peak_memory_stats()
        try:
            figures = time_genlab(
                CASES[name],
                batch,
                warmup,
                steps,
                device=args.device,
                precision=precision,
                compile_step=compiled,
                extra={"grid_size": 16},
                compile_options={"backend": args.compile_backend} if args.compile_backend else None,
            )
        except Exception as exc:  # noqa: BLE001  (a failing row is a finding, not the end of the check)
            rows.append({**row, "error": f"{type(exc).__name__}: {exc}"[:500]})
            traceback.print_exc()
            continue
        figures["epoch_s"] = args.epoch_images / figures["images_per_s"]
        rows.append({**row, **figures, "measured_steps": steps})
        print(
            f"{name:12s} batch {batch:5d} {precision} {'compiled' if compiled else 'eager':8s} "
            f"{figures['images_per_s']:12.0f} img/s  {figures['epoch_s']:8.3f} s/epoch",
            flush=True,
        )
    return rows


@contextlib.contextmanager
def cpu_drawn_randomness(seed: int):
    """torch.randn/rand(_like) drawn from one CPU generator and moved to the requested device, so a CPU
    and a GPU run see the same numbers (each device's own generator would give different ones)."""
    shared = torch.Generator().manual_seed(seed)
    saved = {name: getattr(torch, name) for name in ("randn", "rand", "randn_like", "rand_like")}

    def draw(name):
        def wrapped(*size, device=None, dtype=None, generator=None, **kwargs):
            if len(size) == 1 and isinstance(size[0], (tuple, list, torch.Size)):
                size = tuple(size[0])
            drawn = saved[name](*size, generator=generator or shared, dtype=dtype, **kwargs)
            return drawn.to(device or "cpu")

        return wrapped

    def draw_like(name):
        def wrapped(tensor, dtype=None, **kwargs):
            return saved[name](tensor.shape, generator=shared, dtype=dtype or tensor.dtype).to(tensor.device)

        return wrapped

    torch.randn, torch.rand = draw("randn"), draw("rand")
    torch.randn_like, torch.rand_like = draw_like("randn"), draw_like("rand")
    try:
        yield
    finally:
        for name, function in saved.items():
            setattr(torch, name, function)


def losses_of(case_name: str, device: str, steps: int, batch: int) -> list[dict]:
    """Per-step losses of `steps` fp32 training steps on `device`, randomness drawn on the CPU."""
    from rich.console import Console

    from genlab.runs import resolve_config
    from genlab.training.trainer import Trainer

    case = CASES[case_name]
    overrides = {"model.d_dropout": 0.0} if case.model == "gan" else {}
    flags = {"model": case.model, "preset": case.preset, "batch_size": batch, "epochs": 1, "device": device}
    config = resolve_config(overrides=overrides, flags={**flags, "log_every": 1, "grid_size": 4})
    dataset = synthetic_dataset(batch * steps)
    with tempfile.TemporaryDirectory() as tmp, cpu_drawn_randomness(0):
        Trainer(config, Path(tmp) / "run", dataset=dataset, console=Console(quiet=True)).fit()
        lines = (Path(tmp) / "run" / "metrics.jsonl").read_text().splitlines()
    skip = ("step", "epoch", "images_per_sec")
    return [{k: v for k, v in json.loads(line).items() if k not in skip} for line in lines]


def agreement_rows(args) -> list[dict]:
    """CPU against --device, fp32, a few steps per family: the largest relative loss difference."""
    matmul_tf32, cudnn_tf32 = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    rows = []
    try:
        for name in args.cases:
            cpu = losses_of(name, "cpu", args.agreement_steps, args.agreement_batch)
            other = losses_of(name, args.device, args.agreement_steps, args.agreement_batch)
            worst = 0.0
            agree = len(cpu) == len(other) == args.agreement_steps
            for a, b in zip(cpu, other):
                for key in a:
                    difference = abs(a[key] - b[key])
                    worst = max(worst, difference / max(abs(a[key]), 1e-12))
                    agree &= difference <= AGREEMENT_ATOL + AGREEMENT_RTOL * abs(a[key])
            rows.append({"case": name, "steps": len(cpu), "max_relative_difference": worst, "agree": agree})
            print(
                f"agreement {name:12s} max rel diff {worst:.2e}  {'ok' if agree else 'MISMATCH'}", flush=True
            )
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = matmul_tf32, cudnn_tf32
    return rows


def targets(rows: list[dict]) -> list[dict]:
    found = []
    for name, (goal, met) in TARGETS.items():
        done = [row for row in rows if row["case"] == name and "images_per_s" in row]
        if done:
            best = max(done, key=lambda row: row["images_per_s"])
            found.append({"case": name, "target": goal, "met": bool(met(best)), "best_row": best})
    return found


def markdown(results: dict) -> str:
    lines = [
        f"Machine: {results['machine']}; device {results['device_name']}; {results['date']}.",
        f"Command: `{results['command']}`",
        "",
        f"| case | batch | precision | compile | images/s | s per {results['epoch_images']:,}-image epoch "
        "| peak device MiB |",
        "|---|---:|---|---|---:|---:|---:|",
    ]
    for row in results["rows"]:
        head = f"| {row['case']} | {row['batch_size']} | {row['precision']} | {'yes' if row['compile'] else 'no'} |"
        if "images_per_s" in row:
            memory = f"{row['peak_device_mib']:.0f}" if "peak_device_mib" in row else "-"
            lines.append(f"{head} {row['images_per_s']:.0f} | {row['epoch_s']:.3f} | {memory} |")
        else:
            lines.append(f"{head} {row.get('skipped') or row.get('error')} | | |")
    lines += ["", "| case | CPU vs device, max relative loss difference | agree |", "|---|---:|---|"]
    for row in results["agreement"]:
        lines.append(
            f"| {row['case']} | {row['max_relative_difference']:.2e} | {'yes' if row['agree'] else 'NO'} |"
        )
    lines += ["", "| case | target | met |", "|---|---|---|"]
    for row in results["targets"]:
        lines.append(f"| {row['case']} | {row['target']} | {'yes' if row['met'] else 'no'} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    parser.add_argument("--batch-sizes", nargs="+", type=int, default=[128, 512, 2048, 8192])
    parser.add_argument("--precisions", nargs="+", default=["fp32", "bf16"], choices=["fp32", "bf16"])
    parser.add_argument("--epoch-images", type=int, default=60_000)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--min-steps", type=int, default=5)
    parser.add_argument("--max-steps", type=int, default=60)
    parser.add_argument("--compile", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--compile-batch", type=int, default=2048)
    parser.add_argument("--compile-warmup", type=int, default=5, help="extra warm-up steps when compiled")
    parser.add_argument("--compile-backend", default="", help=argparse.SUPPRESS)  # the dry run: eager
    parser.add_argument("--agreement-steps", type=int, default=3)
    parser.add_argument("--agreement-batch", type=int, default=64)
    parser.add_argument("--budget-s", type=float, default=200.0, help="start no speed row after this")
    parser.add_argument("--tiny", action="store_true", help="the CPU dry run: tiny sizes, seconds")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "gpu_check.json")
    args = parser.parse_args(argv)
    if args.tiny:
        args.batch_sizes, args.epoch_images, args.warmup = [8], 64, 1
        args.min_steps, args.max_steps, args.compile_batch, args.compile_warmup = 2, 2, 8, 1
        args.agreement_steps, args.agreement_batch = 2, 8
        args.compile_backend = args.compile_backend or "eager"
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        parser.error(
            "CUDA is not available here: run on the GPU machine, or --device cpu --tiny for a dry run"
        )
    start = time.perf_counter()
    device_name = torch.cuda.get_device_name(args.device) if args.device.startswith("cuda") else "cpu"
    results = {
        "machine": machine(),
        "device_name": device_name,
        "gpus_visible": torch.cuda.device_count(),
        "multi_gpu": "a multi-GPU row comes with torchrun/DDP support (issue 9)",
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "command": "python benchmarks/gpu_check.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "epoch_images": args.epoch_images,
        "rows": speed_rows(args, deadline=start + args.budget_s),
        "agreement": [],
        "targets": [],
    }
    # Written after each stage, so a run cut short by the 5-minute limit keeps what it measured.
    save(args.out, results, start)
    results["agreement"] = agreement_rows(args)
    save(args.out, results, start)
    if args.compile:  # last: compiling is the slowest part; rows that would start too late are skipped
        results["rows"] += speed_rows(args, deadline=start + args.budget_s, compiled=True)
    results["targets"] = [] if args.tiny else targets(results["rows"])  # tiny sizes judge nothing
    save(args.out, results, start)
    print(markdown(results))
    return 0 if all(row["agree"] for row in results["agreement"]) else 1


def save(out: Path, results: dict, start: float) -> None:
    results["seconds"] = time.perf_counter() - start
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    out.with_suffix(".md").write_text(markdown(results))


if __name__ == "__main__":
    raise SystemExit(main())
