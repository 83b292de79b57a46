"""The seed system's figures: each family trained with its default command, timed, judged and shown.

For each (model, preset) it runs exactly what a user runs, `genlab train --model M --preset P --out DIR`,
in a subprocess and times its wall clock (start-up, data loading, per-epoch grids and checkpoints
included). Then it judges 2,000 seeded samples with sample_quality.py's classifier (a CNN trained on
the 10,000 real MNIST test digits), measures AE/VAE reconstruction error on the 500 held-out mnist-5k
digits, copies each sample grid to --docs, and writes results.json + results.md to --out.

    python benchmarks/families.py                       # gan, gan:article, vae, ae
    python benchmarks/families.py --runs vae ae:denoising --docs docs
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from datetime import date
from pathlib import Path

import torch
from rich.console import Console

sys.path.insert(0, str(Path(__file__).resolve().parent))
import sample_quality  # noqa: E402  (the judge and its figures live there)

import genlab  # noqa: E402
from genlab import viz  # noqa: E402
from genlab.data import load_dataset  # noqa: E402
from genlab.metrics.image_quality import mse, psnr, ssim  # noqa: E402


def train(model: str, preset: str, out: Path, seed: int, extra: Sequence[str] = ()) -> float:
    """Run the user's command (plus `extra` arguments such as --data or --set) and return its wall-clock
    seconds."""
    if out.exists():
        shutil.rmtree(out)
    command = [
        "genlab",
        "train",
        "--model",
        model,
        "--preset",
        preset,
        "--out",
        str(out),
        "--seed",
        str(seed),
        *extra,
    ]
    start = time.perf_counter()
    subprocess.run(command, check=True, env={**os.environ, "COLUMNS": "200"})
    return time.perf_counter() - start


def reconstruction_figures(run) -> dict:
    if not hasattr(run.model, "reconstruct"):
        return {}
    test = load_dataset(run.config.data, "test").images.float() / 255.0  # (500, 1, 28, 28)
    recon = run.reconstruct(test).cpu()
    return {"test_mse": mse(recon, test), "test_psnr": psnr(recon, test), "test_ssim": ssim(recon, test)}


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{os.cpu_count()} cores, {cpu}, torch {torch.__version__}, {torch.get_num_threads()} threads"


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--runs", nargs="+", default=["gan", "gan:article", "vae", "ae"], help="model[:preset]"
    )
    parser.add_argument("--out", type=Path, default=Path("benchmarks/out/families"))
    parser.add_argument("--docs", type=Path, help="copy each 10x10 sample grid here as <model>-<preset>.png")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--mnist-dir", type=Path, default=sample_quality.MNIST_DIR)
    args = parser.parse_args()
    console = Console(stderr=True)
    judge = sample_quality.judge(args.mnist_dir, sample_quality.JUDGE_CACHE, console)
    rows = [sample_quality.real_reference(judge, args.n, 0)]
    for spec in args.runs:
        model, _, preset = spec.partition(":")
        preset = preset or "default"
        run_dir = args.out / f"{model}-{preset}"
        seconds = train(model, preset, run_dir, args.seed)
        run = genlab.load(run_dir)
        images = run.sample(args.n, seed=0)
        grid = args.out / f"{model}-{preset}.png"
        viz.save_grid(images[:100], grid, nrow=10)
        if args.docs:
            args.docs.mkdir(parents=True, exist_ok=True)
            shutil.copy(grid, args.docs / grid.name)
        row = {
            "label": f"{model}/{preset}",
            "command": f"genlab train --model {model} --preset {preset} --seed {args.seed}",
            "train_wall_seconds": round(seconds, 1),
            "epochs": run.state["epoch"],
            "steps": run.state["step"],
            "images_per_sec_steps": sample_quality.step_images_per_sec(run_dir),
            **sample_quality.sample_figures(judge, images),
            **reconstruction_figures(run),
        }
        rows.append(row)
        console.print(row)
    meta = {"date": date.today().isoformat(), "machine": machine(), "command": " ".join(sys.argv)}
    (args.out / "results.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    lines = [
        f"Measured {meta['date']} on {meta['machine']} with `{meta['command']}`.",
        "",
        "| run | train wall s | epochs | img/s | recognized (p >= 0.9) | mean max p | classes >= 5% | rarest class"
        " | class shares 0..9 (%) | test MSE | PSNR dB | SSIM |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- | ---: | ---: | ---: |",
    ]
    for row in rows:
        recon = [f"{row[k]:.4f}" if k in row else "" for k in ("test_mse",)] + [
            f"{row[k]:.2f}" if k in row else "" for k in ("test_psnr", "test_ssim")
        ]
        lines.append(
            f"| {row['label']} | {row.get('train_wall_seconds', '')} | {row.get('epochs', '')} "
            f"| {row.get('images_per_sec_steps') or ''} | {row['recognized_share']:.1%} | {row['mean_max_prob']:.3f} "
            f"| {row['classes_over_5pct']} | {row['rarest_class']}: {row['rarest_share']:.1%} "
            f"| {' '.join(f'{100 * s:.0f}' for s in row['class_shares'])} | {' | '.join(recon)} |"
        )
    (args.out / "results.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
