"""Sample quality of every model family on mnist-5k and Fashion-MNIST, under one CPU budget per run.

Each family trains with its default preset (`genlab train --model NAME --data DATASET`), stopped after
--minutes of training (`time_limit_minutes`) or at the preset's epochs, whichever comes first; then
`genlab eval` measures it with the dataset's domain classifier (n samples, seeded). The metric table is
written as Markdown and JSON. Fashion-MNIST comes from /usr/share/datasets/fashion-mnist/ (Debian's
`dataset-fashion-mnist`) or genlab's cache; without it that dataset is skipped with a note.

    python benchmarks/quality.py                         # 10 CPU minutes a run, n = 10000
    python benchmarks/quality.py --quick                 # 0.25 minutes a run, n = 1000: a smoke test
    python benchmarks/quality.py --minutes 5 --models vae gan --datasets mnist-5k --epochs 1000
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import sys
import time
from pathlib import Path

import torch

import genlab
from genlab.data import load_dataset
from genlab.errors import GenlabError
from genlab.evaluation import evaluate_run, headline, write_report

DATASETS = ("mnist-5k", "fashion-mnist")
COLUMNS = [  # (key, title, format)
    ("epochs", "epochs", "{:.1f}"),
    ("train_minutes", "train min", "{:.1f}"),
    ("fid", "FID", "{:.2f}"),
    ("fid_real_test", "FID real test", "{:.2f}"),
    ("kid_mean", "KID", "{:.3f}"),
    ("precision", "precision", "{:.3f}"),
    ("recall", "recall", "{:.3f}"),
    ("density", "density", "{:.3f}"),
    ("coverage", "coverage", "{:.3f}"),
    ("classifier_score", "class. score", "{:.2f}"),
    ("class_entropy", "class entropy", "{:.3f}"),
    ("rarest_share", "rarest class", "{:.3f}"),
    ("near_copy_share", "near copies", "{:.3f}"),
    ("nll_bits_per_dim", "NLL bits/dim", "{:.4f}"),
    ("recon_mse", "recon. MSE", "{:.4f}"),
    ("recon_ssim", "SSIM", "{:.3f}"),
]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, help="training budget per run (default 10; --quick 0.25)")
    parser.add_argument("--n", type=int, help="samples per evaluation (default 10000; --quick 1000)")
    parser.add_argument("--quick", action="store_true", help="a smoke test: tiny budget and n")
    parser.add_argument("--models", nargs="+", default=None, help="default: every registered family")
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS))
    parser.add_argument(
        "--epochs", type=int, help="override the presets' epochs (e.g. 1000 to fill the budget)"
    )
    parser.add_argument(
        "--preset", default="default", help="the preset every family trains with (default: default)"
    )
    parser.add_argument("--seed", type=int, default=0, help="training and evaluation seed")
    parser.add_argument("--nll-k", type=int, default=100, dest="nll_k")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--runs-dir", default="benchmarks/runs", help="where the runs are trained")
    parser.add_argument("--retrain", action="store_true", help="train again even where a run exists")
    parser.add_argument("--out", default="benchmarks/results/quality", help="writes OUT.md and OUT.json")
    args = parser.parse_args(argv)
    args.minutes = args.minutes if args.minutes is not None else (0.25 if args.quick else 10.0)
    args.n = args.n if args.n is not None else (1000 if args.quick else 10_000)
    args.models = args.models or genlab.list_models()
    return args


def dataset_available(name: str) -> str | None:
    """None if the dataset loads, else why not (offline without the files, ...)."""
    try:
        load_dataset(name, "test")
    except GenlabError as exc:
        return str(exc)
    return None


def train_run(args, model: str, dataset: str, run_dir: Path) -> dict:
    if run_dir.exists() and args.retrain:
        shutil.rmtree(run_dir)
    if (run_dir / "config.json").is_file():
        return {"trained": False}
    settings = {
        "model": model,
        "preset": args.preset,
        "data": dataset,
        "seed": args.seed,
        "device": args.device,
    }
    settings["time_limit_minutes"] = args.minutes
    if args.epochs:
        settings["epochs"] = args.epochs
    start = time.perf_counter()
    genlab.train(out=run_dir, **settings)
    return {"trained": True, "train_seconds": time.perf_counter() - start}


def benchmark_one(args, model: str, dataset: str) -> dict:
    run_dir = Path(args.runs_dir) / f"{dataset}-{model}"
    training = train_run(args, model, dataset, run_dir)
    run = genlab.load(run_dir, device=args.device)
    start = time.perf_counter()
    result = evaluate_run(
        run,
        n=args.n,
        seed=args.seed,
        nll_k=args.nll_k,
        device=args.device,
        log=lambda text: print(text, file=sys.stderr),
    )
    eval_seconds = time.perf_counter() - start
    write_report(result, run_dir)
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line]
    train_seconds = training.get("train_seconds")
    return {
        "dataset": dataset,
        "model": model,
        "run_dir": str(run_dir),
        "steps": run.state.get("step"),
        "epochs": records[-1].get("epoch") if records else None,  # fractional when stopped mid-epoch
        "train_minutes": train_seconds / 60 if train_seconds is not None else None,
        "eval_seconds": eval_seconds,
        "extractor": result.get("extractor", {}).get("name"),
        "extractor_sha256": result.get("extractor", {}).get("sha256"),
        "classifier_test_accuracy": result.get("extractor", {}).get("test_accuracy"),
        "timings": result["timings"],
        **headline(result),
    }


def cell(row: dict, key: str, fmt: str) -> str:
    value = row.get(key)
    return fmt.format(value) if isinstance(value, (int, float)) else "-"


def markdown(rows: list[dict], notes: list[str], args, command: str) -> str:
    lines = [
        "# genlab sample quality",
        "",
        f"`{command}`: preset {args.preset}, {args.minutes:g} training minutes a run at most, "
        f"{args.n} samples per evaluation, seed {args.seed}, device {args.device}; "
        f"{platform.processor() or platform.machine()}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads.",
        "",
        "FID, KID and precision/recall/density/coverage use the dataset's domain classifier features "
        "against the training split (not Inception: not comparable with published FIDs); "
        "`FID real test` is the real test split against the same statistics, the floor. NLL: "
        f"importance-sampled (K = {args.nll_k}) Bernoulli likelihood on continuous intensities.",
        "",
        "| dataset | model | " + " | ".join(title for _, title, _ in COLUMNS) + " |",
        "| --- | --- | " + " | ".join("---" for _ in COLUMNS) + " |",
    ]
    for row in rows:
        cells = [cell(row, key, fmt) for key, _, fmt in COLUMNS]
        lines.append(f"| {row['dataset']} | {row['model']} | " + " | ".join(cells) + " |")
    classifiers = {(r["dataset"], r["extractor_sha256"], r["classifier_test_accuracy"]) for r in rows}
    lines.append("")
    for dataset, sha, acc in sorted(classifiers, key=str):
        accuracy = f"{acc:.4f}" if isinstance(acc, float) else "?"
        lines.append(f"- {dataset}: domain classifier sha256 `{str(sha)[:12]}`, test accuracy {accuracy}")
    lines += [f"- note: {note}" for note in notes]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    command = "python benchmarks/quality.py " + " ".join(argv if argv is not None else sys.argv[1:])
    rows, notes = [], []
    for dataset in args.datasets:
        missing = dataset_available(dataset)
        if missing:
            notes.append(f"skipped {dataset}: {missing}")
            print(f"skipping {dataset}: {missing}", file=sys.stderr)
            continue
        for model in args.models:
            print(f"== {model} on {dataset}", file=sys.stderr)
            rows.append(benchmark_one(args, model, dataset))
            if rows[-1].get("train_minutes") is None:
                notes.append(f"{dataset}-{model}: reused the existing run in {rows[-1]['run_dir']}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "command": command,
        "settings": vars(args),
        "torch": torch.__version__,
        "rows": rows,
        "notes": notes,
    }
    out.with_suffix(".json").write_text(json.dumps(payload, indent=2))
    text = markdown(rows, notes, args, command.strip())
    out.with_suffix(".md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
