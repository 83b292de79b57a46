"""Judge a generator's samples with a digit classifier trained on real MNIST digits.

For each run (an existing run directory, or one trained first with --train) it draws N seeded samples
and reports: training seconds and images/s, the share the judge recognizes confidently (max prob >= 0.9),
the mean max prob, the predicted-class histogram, how many classes hold >= 5% of the samples, the rarest
class share and the normalized entropy of the histogram (1 = uniform over the 10 digits). The same
figures for 2000 real mnist-5k digits (never seen by the judge) are the reference row.

The judge is `genlab.metrics.classifier`'s CNN trained on the 10,000 real MNIST test digits; its weights
are cached (safetensors) under --cache-dir, keyed by a hash of its data and settings.

    python benchmarks/sample_quality.py runs/gan
    python benchmarks/sample_quality.py --train --model gan --preset article --epochs 30 --time-limit 4
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table
from safetensors.torch import load_file, save_file

import genlab
from genlab import viz
from genlab.config import parse_overrides, route_overrides
from genlab.data import load_dataset
from genlab.metrics.classifier import ClassifierConfig, DomainClassifier, accuracy, extract, train_classifier

# the real MNIST test split (t10k-images/labels-idx1-ubyte.gz) in shared/ beside the repo
MNIST_DIR = (Path(__file__).resolve().parents[1] / "../shared/datasets/mnist").resolve()
JUDGE_SETTINGS = {"epochs": 6, "batch_size": 64, "lr": 1e-3, "seed": 0, "max_shift": 2}
CONFIDENT = 0.9  # a sample counts as recognized when the judge's max probability reaches this
MIN_SHARE = 0.05  # a class counts as covered when it holds at least this share of the samples
NUM_CLASSES = 10
JUDGE_DATA = ("mnist", "mnist-5k")  # the datasets whose samples the judge (a digit classifier) can score
JUDGE_CACHE = Path(tempfile.gettempdir()) / "genlab-benchmark-cache"


# --- the judge -------------------------------------------------------------------------------------------
def load_mnist_test(mnist_dir: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """The 10,000 real MNIST test digits, uint8 (N, 1, 28, 28), and labels (N,), via a temp GENLAB_DATA."""
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "mnist").mkdir()
        for name in ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
            (Path(tmp) / "mnist" / name).symlink_to((mnist_dir / name).resolve())
        previous = os.environ.get("GENLAB_DATA")
        os.environ["GENLAB_DATA"] = tmp
        try:
            dataset = load_dataset("mnist", "test")
        finally:
            if previous is None:
                os.environ.pop("GENLAB_DATA", None)
            else:
                os.environ["GENLAB_DATA"] = previous
    return dataset.images, dataset.labels


def judge(mnist_dir: Path, cache_dir: Path, console: Console) -> DomainClassifier:
    """Train the judge on real MNIST test digits, or load it from the cache when nothing changed."""
    images, labels = load_mnist_test(mnist_dir)
    config = ClassifierConfig(image_shape=tuple(images.shape[1:]), num_classes=NUM_CLASSES)
    key_source = json.dumps({"config": config.to_dict(), "train": JUDGE_SETTINGS, "torch": torch.__version__})
    digest = hashlib.sha256(key_source.encode() + images.numpy().tobytes() + labels.numpy().tobytes())
    path = cache_dir / f"judge-{digest.hexdigest()[:16]}.safetensors"
    if path.is_file():
        model = DomainClassifier(config)
        model.load_state_dict(load_file(str(path)))
        return model.eval()
    console.print(f"training the judge on {len(images)} real MNIST test digits (cached at {path})")
    start = time.perf_counter()
    model = train_classifier(images, labels, NUM_CLASSES, config=config, **JUDGE_SETTINGS)
    console.print(f"judge trained in {time.perf_counter() - start:.0f}s")
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_suffix(".tmp")
    save_file(
        {k: v.contiguous() for k, v in model.state_dict().items()}, str(temp), metadata={"key": key_source}
    )
    temp.replace(path)
    return model


# --- figures ---------------------------------------------------------------------------------------------
def sample_figures(model: DomainClassifier, images: torch.Tensor) -> dict:
    """Recognition and class-coverage figures of images (N, 1, 28, 28) in [0, 1]."""
    _, probs = extract(model, images.float())  # (N, 10)
    confidence, predicted = probs.max(dim=1)  # (N,) each
    shares = torch.bincount(predicted, minlength=NUM_CLASSES).double() / len(predicted)  # (10,)
    entropy = max(
        0.0, float(-torch.xlogy(shares, shares).sum()) / float(torch.log(torch.tensor(float(NUM_CLASSES))))
    )
    return {
        "n": len(images),
        "recognized_share": float((confidence >= CONFIDENT).double().mean()),
        "mean_max_prob": float(confidence.mean()),
        "class_shares": [round(float(s), 4) for s in shares],
        "classes_over_5pct": int((shares >= MIN_SHARE).sum()),
        "rarest_class": int(shares.argmin()),
        "rarest_share": float(shares.min()),
        "normalized_entropy": entropy,
    }


def real_reference(model: DomainClassifier, n: int, seed: int) -> dict:
    """Figures for n real mnist-5k training digits (the generators' data; the judge never saw them)."""
    images = load_dataset("mnist-5k", "train").images
    pick = torch.randperm(len(images), generator=torch.Generator().manual_seed(seed))[:n]
    return {"label": f"real mnist-5k ({len(pick)})", **sample_figures(model, images[pick].float() / 255.0)}


# --- runs ------------------------------------------------------------------------------------------------
def train_run(args: argparse.Namespace, console: Console) -> tuple[Path, dict]:
    """Train one run in this process and time it; the wall clock includes data loading and set-up."""
    from genlab.runs import resolve_config
    from genlab.training.trainer import Trainer

    flags = {
        "model": args.model,
        "preset": args.preset,
        "epochs": args.epochs,
        "seed": args.seed,
        "time_limit_minutes": args.time_limit,
    }
    overrides = route_overrides(parse_overrides(args.set))
    config = resolve_config(overrides=overrides, flags=flags)
    out = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix=f"sq-{config.model}-{config.preset}-"))
    start = time.perf_counter()
    result = Trainer(config, out, console=console).fit()
    wall = time.perf_counter() - start
    images_seen = result.steps * config.batch_size
    timing = {
        "train_wall_seconds": round(wall, 1),
        "train_loop_seconds": round(result.seconds, 1),
        "steps": result.steps,
        "epochs_done": result.epochs_done,
        "epochs_planned": config.epochs,
        "images_per_sec_overall": round(images_seen / result.seconds, 1),  # incl. per-epoch grids/checkpoints
        "command": " ".join(sys.argv),
    }
    return out, timing


def step_images_per_sec(run_dir: Path) -> float | None:
    """Median training-step throughput logged in metrics.jsonl (excludes per-epoch overhead)."""
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        return None
    rates = sorted(json.loads(line)["images_per_sec"] for line in path.read_text().splitlines() if line)
    return round(rates[len(rates) // 2], 1) if rates else None


def evaluate_run(run_dir: Path, model: DomainClassifier, args: argparse.Namespace, timing: dict) -> dict:
    run = genlab.load(run_dir)
    images = run.sample(args.n, seed=args.sample_seed).cpu()  # (N, 1, 28, 28) in [0, 1]
    grid_path = Path(args.grid_dir or run_dir) / f"sample_quality-{run_dir.name}.png"
    viz.save_grid(images[:100], grid_path, nrow=10)
    info = run.info()
    return {
        "label": args.label or f"{info['model']}/{info['preset']} seed {run.config.seed}",
        "run_dir": str(run_dir),
        "model": info["model"],
        "preset": info["preset"],
        "seed": run.config.seed,
        "epoch": info["epoch"],
        "step": info["step"],
        "weights": info["weights"],
        "images_per_sec_steps": step_images_per_sec(run_dir),
        **timing,
        "sample_seed": args.sample_seed,
        "grid": str(grid_path),
        **sample_figures(model, images),
    }


# --- report ----------------------------------------------------------------------------------------------
def print_table(rows: list[dict], console: Console) -> None:
    table = Table(title=f"sample quality (judge: CNN on real MNIST; recognized = max prob >= {CONFIDENT})")
    for name in (
        "run",
        "train s",
        "img/s",
        "recog",
        "mean p",
        "classes>=5%",
        "rarest",
        "entropy",
        "shares 0..9 (%)",
    ):
        table.add_column(name, justify="left" if name in ("run", "shares 0..9 (%)") else "right")
    for row in rows:
        seconds = row.get("train_wall_seconds")
        rate = row.get("images_per_sec_steps")
        table.add_row(
            row["label"],
            "-" if seconds is None else f"{seconds:.0f}",
            "-" if rate is None else f"{rate:.0f}",
            f"{row['recognized_share']:.1%}",
            f"{row['mean_max_prob']:.3f}",
            str(row["classes_over_5pct"]),
            f"{row['rarest_class']}: {row['rarest_share']:.1%}",
            f"{row['normalized_entropy']:.3f}",
            " ".join(f"{100 * s:.0f}" for s in row["class_shares"]),
        )
    console.print(table)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("run_dirs", nargs="*", type=Path, help="trained run directories to judge")
    parser.add_argument("--train", action="store_true", help="train a run first (timed), then judge it")
    parser.add_argument("--model", default="gan")
    parser.add_argument("--preset", default="default")
    parser.add_argument("--epochs", type=int, help="default: the preset's")
    parser.add_argument("--time-limit", type=float, help="minutes; training stops cleanly after")
    parser.add_argument("--seed", type=int, help="training seed (default: the config's, 0)")
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="as `genlab train --set`"
    )
    parser.add_argument("--out", help="run directory for --train (default: a new temp dir)")
    parser.add_argument("--label", help="name of the run in the table and JSON")
    parser.add_argument("--n", type=int, default=2000, help="samples per run (default 2000)")
    parser.add_argument("--sample-seed", type=int, default=0)
    parser.add_argument(
        "--results",
        type=Path,
        default=Path("benchmarks/results/sample_quality.jsonl"),
        help="JSON lines file the figures are appended to",
    )
    parser.add_argument("--grid-dir", help="where the 10x10 sample grids go (default: each run dir)")
    parser.add_argument("--cache-dir", type=Path, default=JUDGE_CACHE)
    parser.add_argument("--mnist-dir", type=Path, default=MNIST_DIR)
    parser.add_argument("--no-reference", action="store_true", help="skip the real-digit reference row")
    args = parser.parse_args(argv)
    if not args.train and not args.run_dirs:
        parser.error("give run directories to judge, or --train")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    console = Console(stderr=True)
    model = judge(args.mnist_dir, args.cache_dir, console)
    held_out = load_dataset("mnist-5k", "test")
    console.print(
        f"judge accuracy on the 500 held-out mnist-5k digits: {accuracy(model, held_out.images, held_out.labels):.1%}"
    )
    rows = [] if args.no_reference else [real_reference(model, 2000, args.sample_seed)]
    run_dirs = list(args.run_dirs)
    timings = [{} for _ in run_dirs]
    if args.train:
        out, timing = train_run(args, console)
        run_dirs.append(out)
        timings.append(timing)
    for run_dir, timing in zip(run_dirs, timings, strict=True):
        row = evaluate_run(Path(run_dir), model, args, timing)
        rows.append(row)
        args.results.parent.mkdir(parents=True, exist_ok=True)
        with open(args.results, "a") as handle:
            handle.write(json.dumps(row) + "\n")
    print_table(rows, Console(width=200))
    return 0


if __name__ == "__main__":
    sys.exit(main())
