"""Sample trained GAN runs several ways (sampling-only settings: the weights never change) and score each
way: the recognition judge of sample_quality.py on --n samples, and genlab eval's classifier FID and
precision/recall/coverage on --fid-n samples (10,000 by default: at 2,000 the FID of one set of
weights moves by several points from one sampling seed to the next). The judge is a digit classifier,
so runs trained on other data (Fashion-MNIST) get FID and PRDC only, their judge columns "-".

    python benchmarks/samplers.py RUN [RUN ...] --seeds 0 1 --out benchmarks/results/samplers

Each sampler is a list of `--sampling` settings (see SAMPLERS); --only picks some. Writes OUT.json
(one row per run, sampler and seed) and OUT.md (the rows, then the mean over the seeds).
"""

from __future__ import annotations

import argparse
import functools
import json
import shlex
import statistics
import sys
import time
from datetime import date
from pathlib import Path

import torch
from rich.console import Console

sys.path.insert(0, str(Path(__file__).resolve().parent))
from families import machine  # noqa: E402
from sample_quality import JUDGE_CACHE, JUDGE_DATA, MNIST_DIR, judge, sample_figures  # noqa: E402

import genlab  # noqa: E402
from genlab.cli.common import apply_sampling  # noqa: E402
from genlab.evaluation import headline  # noqa: E402
from genlab.evaluation.evaluate import evaluate_run, sample_images  # noqa: E402

DDLS = ["refine_steps=100", "refine_d_weight=1", "refine_step_size=0.01"]  # Che et al. 2020 as published
SAMPLERS: dict[str, list[str]] = {
    "as trained": [],
    "plain G(z)": ["refine_steps=0"],
    "rejection (DRS)": ["refine_steps=0", "rejection=true"],
    "DDLS": DDLS,
    "rejection + DDLS": [*DDLS, "rejection=true"],
    "as trained + rejection": ["rejection=true"],
    "refined (long's)": ["refine_steps=50", "refine_d_weight=64", "refine_step_size=0.001"],  # any GAN run
}
COLUMNS = ("recognized", "min class", "max class", "FID", "precision", "recall", "coverage", "s per 1k")
JUDGED = ("recognized", "min class", "max class")


def score(run_dir: Path, sampler: str, seed: int, judge_model, args) -> dict:
    run = apply_sampling(genlab.load(run_dir), SAMPLERS[sampler])
    start = time.perf_counter()
    images = sample_images(run.model, args.n, seed=seed)
    seconds_per_1k = (time.perf_counter() - start) * 1000 / args.n
    figures = sample_figures(judge_model(), images) if run.config.data in JUDGE_DATA else None
    shares = figures["class_shares"] if figures else None
    flat = headline(evaluate_run(run, n=args.fid_n, metrics=["fid", "prdc"], seed=seed))
    return {
        "run": str(run_dir),
        "training_seed": run.config.seed,
        "epoch": run.state.get("epoch"),
        "sampler": sampler,
        "sampling": SAMPLERS[sampler],
        "seed": seed,
        "n_judged": args.n,
        "n_fid": args.fid_n,
        "data": run.config.data,
        "recognized": figures["recognized_share"] if figures else None,
        "class_shares": shares,
        "min class": min(shares) if shares else None,
        "max class": max(shares) if shares else None,
        "FID": flat["fid"],
        "fid_real_test": flat["fid_real_test"],
        "precision": flat["precision"],
        "recall": flat["recall"],
        "coverage": flat["coverage"],
        "s per 1k": seconds_per_1k,
    }


def fmt(column: str, value: float | None) -> str:
    if value is None:
        return "-"
    if column in JUDGED:
        return f"{100 * value:.1f}%"
    return f"{value:.1f}" if column == "FID" else f"{value:.2f}"


def markdown(rows: list[dict], header: str) -> str:
    lines = [header, "", "| run | sampler | seed | " + " | ".join(COLUMNS) + " |"]
    lines.append("| --- | --- | ---: | " + " | ".join("---:" for _ in COLUMNS) + " |")
    for row in rows:
        cells = [fmt(c, row[c]) for c in COLUMNS]
        lines.append(
            f"| {Path(row['run']).name} (seed {row['training_seed']}) | {row['sampler']} | {row['seed']} | "
            + " | ".join(cells)
            + " |"
        )
    groups: dict[tuple[str, str], list[dict]] = {}
    for row in rows:
        groups.setdefault((row["run"], row["sampler"]), []).append(row)
    lines += [
        "",
        "Over the sampling seeds: the mean, but the lowest min class and the highest max class:",
        "",
        "| run | sampler | seeds | " + " | ".join(COLUMNS) + " |",
    ]
    lines.append("| --- | --- | ---: | " + " | ".join("---:" for _ in COLUMNS) + " |")
    for (run, sampler), group in groups.items():
        combine = {"min class": min, "max class": max}
        cells = [
            fmt(c, None if group[0][c] is None else combine.get(c, statistics.fmean)([r[c] for r in group]))
            for c in COLUMNS
        ]
        seeds = ",".join(str(r["seed"]) for r in group)
        name = f"{Path(run).name} (seed {group[0]['training_seed']})"
        lines.append(f"| {name} | {sampler} | {seeds} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("run_dirs", nargs="+", type=Path, help="trained GAN run directories")
    parser.add_argument("--only", nargs="+", choices=list(SAMPLERS), help="samplers to score (default: all)")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0], help="sampling seeds (default 0)")
    parser.add_argument("--n", type=int, default=2000, help="samples the judge sees (default 2000)")
    parser.add_argument("--fid-n", type=int, default=10_000, help="samples for FID/PRDC (default 10000)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/samplers"))
    parser.add_argument("--cache-dir", type=Path, default=JUDGE_CACHE)
    parser.add_argument("--mnist-dir", type=Path, default=MNIST_DIR)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(min(2, torch.get_num_threads()))
    console = Console(stderr=True)
    judge_model = functools.cache(lambda: judge(args.mnist_dir, args.cache_dir, console))  # digit runs only
    rows = []
    for run_dir in args.run_dirs:
        for sampler in args.only or list(SAMPLERS):
            for seed in args.seeds:
                row = score(run_dir, sampler, seed, judge_model, args)
                console.print(
                    f"{run_dir.name} | {sampler} | seed {seed}: "
                    + ", ".join(f"{c} {fmt(c, row[c])}" for c in COLUMNS)
                )
                rows.append(row)
    header = (
        f"Samplers, {date.today().isoformat()}, {machine()}; judge on {args.n} samples, FID/PRDC on "
        f"{args.fid_n}; command: python benchmarks/samplers.py {shlex.join(sys.argv[1:])}"
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps({"header": header, "rows": rows}, indent=1) + "\n")
    args.out.with_suffix(".md").write_text(markdown(rows, header))
    console.print(f"wrote {args.out.with_suffix('.md')} and .json")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
