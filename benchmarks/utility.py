"""Utility of synthetic digits: the standard scores, each with the same small classifier and step budget.

- train on real, test on real (TRTR): the classifier on the real mnist-5k training digits;
- train on synthetic, test on real (TSTR): on `--per-class` digits per class from a conditional model
  trained on all real training digits;
- low-data augmentation: 10, 50 and 100 real labeled digits per class, with and without synthetic digits
  from a conditional model trained on those same real digits only.
Every classifier is genlab's small CNN (genlab.metrics.classifier) trained for `--steps` Adam steps
(batch 64, one-pixel shifts), tested on the real MNIST test split (10,000 digits, from
`--mnist-dir`, else the 500 held-out mnist-5k digits). Each figure is a mean and std over `--seeds` seeds
(classifier seeds and synthetic draws; each real subset and each conditional model is one, seed 0: a
model per seed would not fit the CPU budget).

The conditional models come from `genlab train --model M --preset conditional` (M = vae or gan). If that
preset does not exist (the conditional families are not in this genlab yet), the synthetic rows are
skipped with a message and only the real-data rows are measured.

    python benchmarks/utility.py --model vae --parts trtr tstr
    python benchmarks/utility.py --model vae --parts low
    python benchmarks/utility.py --conditional-run runs/cvae      # TSTR with a model trained already
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

import genlab
from genlab.data import load_dataset
from genlab.metrics.classifier import accuracy, train_classifier
from genlab.registry import get_model_class
from genlab.uses.synth import synthesize

SHOTS = (10, 50, 100)


def classifier_accuracy(images: torch.Tensor, labels: torch.Tensor, test, steps: int, seed: int) -> float:
    """The same classifier and budget for every row: `steps` Adam steps of batch 64, whatever the data size."""
    epochs = max(1, math.ceil(steps * 64 / len(images)))
    model = train_classifier(images, labels, 10, epochs=epochs, seed=seed, num_threads=1)
    return accuracy(model, test.images, test.labels)


def subset(train, per_class: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    picks = []
    for c in range(10):
        members = torch.nonzero(train.labels == c).flatten()
        picks.append(members[torch.randperm(len(members), generator=generator)[:per_class]])
    picks = torch.cat(picks)
    return train.images[picks], train.labels[picks]


def train_conditional(images, labels, args, seed: int, out: Path) -> Path:
    """`genlab train --model M --preset conditional` for about `--gen-steps` steps of batch 64. A small
    subset is tiled to >= 2,000 images first, so that the run's per-epoch work (grid, checkpoint) does not
    dominate and its fixed 10% holdout still leaves (with high probability) every real digit in training."""
    repeats = max(1, math.ceil(2000 / len(images)))
    data = out.with_suffix(".npz")
    np.savez(data, images=images[:, 0].repeat(repeats, 1, 1).numpy(), labels=labels.repeat(repeats).numpy())
    epochs = max(1, round(args.gen_steps * 64 / (0.9 * repeats * len(images))))
    command = [sys.executable, "-m", "genlab", "train", "--model", args.model, "--preset", "conditional",
               "--data", str(data), "--epochs", str(epochs), "--seed", str(seed), "--out", str(out),
               "--set", "grid_size=16", *[x for kv in args.gen_set for x in ("--set", kv)]]  # fmt: skip
    t0 = time.time()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    print(
        f"trained {out.name}: {len(images)} real digits x{repeats}, {epochs} epochs, {time.time() - t0:.0f} s",
        flush=True,
    )
    return out


def synthetic(run_dir: Path, per_class: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    images, labels = synthesize(genlab.load(run_dir), per_class=per_class, seed=seed)
    return (images * 255).round().to(torch.uint8), labels


def summarize(values: list[float]) -> dict:
    return {"mean": float(np.mean(values)), "std": float(np.std(values)), "values": values}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="vae", choices=["vae", "gan"])
    parser.add_argument("--conditional-run", help="a conditional run trained on all of mnist-5k (for TSTR)")
    parser.add_argument("--gen-steps", type=int, default=800, help="training steps of each conditional model")
    parser.add_argument("--gen-set", nargs="*", default=[], help="extra --set KEY=VALUE for those trainings")
    parser.add_argument(
        "--parts", nargs="+", default=["trtr", "tstr", "low"], choices=["trtr", "tstr", "low"]
    )
    parser.add_argument("--shots", nargs="+", type=int, default=list(SHOTS))
    parser.add_argument("--per-class", type=int, default=450, help="synthetic digits per class")
    parser.add_argument("--steps", type=int, default=600, help="classifier Adam steps per row")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--mnist-dir", default="../shared/datasets")
    parser.add_argument("--results", default="benchmarks/results")
    args = parser.parse_args()

    started = time.time()
    train = load_dataset("mnist-5k", "train")
    if (Path(args.mnist_dir) / "mnist").is_dir():
        os.environ["GENLAB_DATA"] = str(Path(args.mnist_dir).resolve())
        test = load_dataset("mnist", "test")
    else:
        test = load_dataset("mnist-5k", "test")
    has_conditional = "conditional" in get_model_class(args.model).presets
    if not has_conditional and not args.conditional_run:
        print(f"genlab's {args.model} has no 'conditional' preset yet (the conditional families are not in this "
              "genlab): skipping TSTR and augmentation, measuring the real-data rows only")  # fmt: skip
    seeds = range(args.seeds)
    out = Path(args.results)
    previous = out / "utility.json"  # parts run separately (each under ~10 minutes) add up in one table
    rows: dict[str, dict] = json.loads(previous.read_text())["rows"] if previous.is_file() else {}
    if "trtr" in args.parts:
        rows["TRTR: all real (4,500)"] = summarize(
            [classifier_accuracy(train.images, train.labels, test, args.steps, s) for s in seeds]
        )
        print(rows, flush=True)
    work = Path(tempfile.mkdtemp(prefix="genlab-utility-"))
    if "tstr" in args.parts and (has_conditional or args.conditional_run):
        # one conditional model on all real digits; the spread is over the synthetic draws and classifiers
        if args.conditional_run:
            run_dir = Path(args.conditional_run)
        else:
            run_dir = train_conditional(train.images, train.labels, args, 0, work / "all")
        values = [
            classifier_accuracy(*synthetic(run_dir, args.per_class, s), test, args.steps, s) for s in seeds
        ]
        rows[f"TSTR: synthetic only ({args.per_class}/class, {args.model})"] = summarize(values)
    for shots in args.shots if "low" in args.parts else []:
        # one real subset and one conditional model trained on it; the spread is over classifier seeds
        images, labels = subset(train, shots, seed=100)
        rows[f"{shots}/class real"] = summarize(
            [classifier_accuracy(images, labels, test, args.steps, s) for s in seeds]
        )
        if has_conditional:
            run_dir = train_conditional(images, labels, args, 0, work / f"k{shots}")
            augmented = []
            for s in seeds:
                fake_images, fake_labels = synthetic(run_dir, args.per_class, s)
                augmented.append(classifier_accuracy(
                    torch.cat([images, fake_images]), torch.cat([labels, fake_labels]), test, args.steps, s
                ))  # fmt: skip
            rows[f"{shots}/class real + {args.per_class}/class synthetic ({args.model})"] = summarize(
                augmented
            )
        print(rows, flush=True)
    meta = {
        "command": "python " + " ".join(sys.argv), "test": f"{test.name} test ({len(test)} digits)",
        "seconds": round(time.time() - started), "conditional_preset": has_conditional,
        "machine": f"{platform.processor() or platform.machine()}, torch {torch.__version__}",
        "date": time.strftime("%Y-%m-%d"),
    }  # fmt: skip
    out.mkdir(parents=True, exist_ok=True)
    (out / "utility.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    lines = [f"`{meta['command']}`; accuracy on {meta['test']}, mean +- std over {args.seeds} seeds\n",
             "| training data | accuracy |", "| --- | --- |"]  # fmt: skip
    lines += [f"| {name} | {100 * r['mean']:.1f}% +- {100 * r['std']:.1f} |" for name, r in rows.items()]
    (out / "utility.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
