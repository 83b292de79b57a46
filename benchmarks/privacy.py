"""Privacy-utility table: the VAE and the GAN on mnist-5k trained with DP-SGD at epsilon 1, 3, 8 and without DP.

For each (model, epsilon) it runs `genlab train ... [--dp-epsilon E]` with one fixed budget (same nets, epochs,
batch size, seed), then measures
- eval FID: `genlab eval RUN --n N --metrics fid` (domain-classifier features, against the training split);
- recognized: share of N samples that sample_quality.py's judge (a CNN trained on the 10,000 real MNIST test
  digits) classifies with p >= 0.9;
- membership inference: can an attacker tell the 4,500 training digits from the 500 held-out ones? The
  score is, for the VAE, the per-image loss (-ELBO, averaged over 8 draws of z; members should have lower
  loss), for the GAN the discriminator's logit (white-box, LOGAN-style) and the distance to the nearest
  of N generated samples (black-box, GAN-Leaks-style). AUC 0.5 means the attack learns nothing.

Two regimes, each a table (--regime):
- utility: the whole mnist-5k training split (4,500 digits), a few epochs: what DP costs in quality.
- memorize: a small training set (the first 1,800 of those digits plus 200 held out, as an .npz) trained
  for many epochs, the setting in which a model without DP overfits and a membership attack has something
  to find: whether DP takes that signal away is the question this table answers.

Each finished row is saved as JSON under --out and reused unless --force, so an interrupted table can
be completed, or built in several shorter jobs (--models vae, then --models gan):

    flock /tmp/genlab-cpu.lock python benchmarks/privacy.py                      # utility, 8 rows
    flock /tmp/genlab-cpu.lock python benchmarks/privacy.py --regime memorize    # memorize, 8 rows
    python benchmarks/privacy.py --table [--regime memorize]                     # print measured rows
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

import numpy as np
import torch
from rich.console import Console

sys.path.insert(0, str(Path(__file__).resolve().parent))
import sample_quality  # noqa: E402  (the judge)
from families import machine  # noqa: E402

import genlab  # noqa: E402
from genlab.data import load_dataset  # noqa: E402

EPSILONS = (0.0, 8.0, 3.0, 1.0)  # 0 = no DP
# One budget per family, the same with and without DP. Smaller nets than the default presets: DP-SGD's
# per-example gradients cost memory and time in proportion to the private weights.
UTILITY_SETTINGS = {
    "vae": ["--preset", "mlp", "--epochs", "4", "--batch-size", "64", "--set", "hidden=[256]", "--set", "latent_dim=8"],
    # D without the minibatch-stddev feature in every row (DP training would swap it for a constant), so
    # all rows share one architecture and the white-box attack scores each image alone.
    "gan": [
        "--epochs", "4", "--batch-size", "64", "--set", "d_hidden=[256,128]",
        "--set", "g_hidden=[128,256,512]", "--set", "d_minibatch_stddev=false",
    ],
}  # fmt: skip
# Many epochs on 1,800 digits: wider nets than above, so that without DP they can memorize.
MEMORIZE_SETTINGS = {
    "vae": ["--preset", "mlp", "--epochs", "60", "--batch-size", "64", "--set", "hidden=[512]", "--set", "latent_dim=16"],
    "gan": [
        "--epochs", "60", "--batch-size", "64", "--set", "d_hidden=[512,256]",
        "--set", "g_hidden=[128,256,512]", "--set", "d_minibatch_stddev=false",
    ],
}  # fmt: skip
REGIMES = {"utility": UTILITY_SETTINGS, "memorize": MEMORIZE_SETTINGS}
MEMORIZE_IMAGES = 2000  # 90% members, 10% held out by genlab's fixed split of an .npz


def memorize_data(out: Path) -> Path:
    """The first MEMORIZE_IMAGES mnist-5k training digits as an .npz (genlab holds 10% of it out)."""
    path = out / f"mnist-first{MEMORIZE_IMAGES}.npz"
    if not path.is_file():
        digits = load_dataset("mnist-5k", "train")
        np.savez(
            path,
            images=digits.images[:MEMORIZE_IMAGES, 0].numpy(),
            labels=digits.labels[:MEMORIZE_IMAGES].numpy(),
        )
    return path


def train(model: str, epsilon: float, out: Path, args: argparse.Namespace) -> tuple[list[str], float]:
    if out.exists():
        shutil.rmtree(out)
    command = [
        "genlab",
        "train",
        "--model",
        model,
        *REGIMES[args.regime][model],
        "--seed",
        str(args.seed),
        "--out",
        str(out),
    ]
    if args.regime == "memorize":
        command += ["--data", str(memorize_data(args.out).resolve())]
    if args.epochs:  # a quick check of the script, not the table's budget
        command += ["--epochs", str(args.epochs)]
    if epsilon > 0:
        command += ["--dp-epsilon", f"{epsilon:g}"]
    start = time.perf_counter()
    subprocess.run(command, check=True, env={**os.environ, "COLUMNS": "200"})
    return command, time.perf_counter() - start


def eval_fid(run_dir: Path, n: int) -> float:
    command = ["genlab", "eval", str(run_dir), "--n", str(n), "--metrics", "fid", "--device", "cpu"]
    subprocess.run(command, check=True, env={**os.environ, "COLUMNS": "200"}, stdout=subprocess.DEVNULL)
    return float(json.loads((run_dir / "eval.json").read_text())["metrics"]["fid"])


def auc(member_scores: torch.Tensor, nonmember_scores: torch.Tensor) -> float:
    """P(score of a random member > score of a random non-member), ties counting 1/2 (Mann-Whitney U)."""
    scores = torch.cat([member_scores, nonmember_scores]).double()
    order = scores.argsort()
    ranks = torch.empty_like(scores)
    ranks[order] = torch.arange(1, len(scores) + 1, dtype=torch.float64)
    for value in scores.unique():  # average ranks over ties
        tied = scores == value
        ranks[tied] = ranks[tied].mean()
    m, n = len(member_scores), len(nonmember_scores)
    return float((ranks[:m].sum() - m * (m + 1) / 2) / (m * n))


@torch.no_grad()
def membership_attacks(run, n_samples: int) -> dict[str, float]:
    model = run.model.eval()
    members = load_dataset(run.config.data, "train").images
    held_out = load_dataset(run.config.data, "test").images
    as_input = model.from_uint8  # uint8 -> the model's input range
    if run.config.model == "vae":
        generator = torch.Generator().manual_seed(0)

        def loss(images: torch.Tensor) -> torch.Tensor:
            x = as_input(images)
            return -torch.stack([model.elbo(x, generator=generator) for _ in range(8)]).mean(0)  # (N,)

        return {"mia_auc": auc(-loss(members), -loss(held_out))}  # lower loss -> "member"
    d_auc = auc(model.discriminate(as_input(members)), model.discriminate(as_input(held_out)))
    samples = run.sample(n_samples, seed=1).flatten(1)  # (S, D) in [0, 1]

    def nearest(images: torch.Tensor) -> torch.Tensor:
        return torch.cdist((images.float() / 255.0).flatten(1), samples).min(dim=1).values  # (N,)

    nn_auc = auc(-nearest(members), -nearest(held_out))  # closer to a sample -> "member"
    return {"mia_auc": d_auc, "mia_nn_auc": nn_auc}


def judged(judge, images: torch.Tensor) -> dict:
    figures = sample_quality.sample_figures(judge, images)
    return {"recognized": figures["recognized_share"], "classes_over_5pct": figures["classes_over_5pct"]}


def run_row(model: str, epsilon: float, args: argparse.Namespace, judge) -> dict:
    run_dir = args.out / f"{row_prefix(args.regime)}{model}-eps{epsilon:g}"
    command, seconds = train(model, epsilon, run_dir, args)
    run = genlab.load(run_dir)
    privacy = run.privacy()
    row = {
        "regime": args.regime,
        "model": model,
        "target_epsilon": epsilon or None,
        "epsilon": privacy["epsilon"] if privacy else None,
        "delta": privacy["delta"] if privacy else None,
        "noise_multiplier": privacy["noise_multiplier"] if privacy else None,
        "steps": run.state["step"],
        "train_seconds": round(seconds, 1),
        "command": " ".join(command),
        "fid": eval_fid(run_dir, args.n),
        **judged(judge, run.sample(args.n, seed=0)),
        **membership_attacks(run, args.n),
    }
    return row


def row_prefix(regime: str) -> str:
    return "" if regime == "utility" else f"{regime}-"  # utility rows keep their first names


def table(rows: list[dict], meta: dict) -> str:
    lines = [
        f"Regime {meta['regime']}: measured {meta['date']} on {meta['machine']}.",
        "",
        "| model | epsilon (target) | epsilon spent | noise multiplier | eval FID | recognized (p >= 0.9) "
        "| digits >= 5% | MIA AUC (loss / D) | MIA AUC (nearest sample) | train s |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in rows:
        spent = f"{row['epsilon']:.2f}" if row["epsilon"] is not None else "-"
        sigma = f"{row['noise_multiplier']:.2f}" if row["noise_multiplier"] is not None else "-"
        nn_auc = f"{row['mia_nn_auc']:.3f}" if "mia_nn_auc" in row else "-"
        lines.append(
            f"| {row['model']} | {row['target_epsilon'] or 'no DP'} | {spent} | {sigma} | {row['fid']:.1f} "
            f"| {row['recognized']:.1%} | {row['classes_over_5pct']} | {row['mia_auc']:.3f} | {nn_auc} | {row['train_seconds']} |"
        )
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--regime", choices=sorted(REGIMES), default="utility")
    parser.add_argument("--models", nargs="+", default=["vae", "gan"], choices=sorted(UTILITY_SETTINGS))
    parser.add_argument("--epsilons", nargs="+", type=float, default=list(EPSILONS), help="0 = no DP")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/out/privacy"))
    parser.add_argument("--n", type=int, default=2000, help="samples for FID, the judge and the NN attack")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, help="override the budget's epochs (to test the script)")
    parser.add_argument("--force", action="store_true", help="retrain rows already measured")
    parser.add_argument("--table", action="store_true", help="only print the table of measured rows")
    args = parser.parse_args()
    console = Console(stderr=True)
    args.out.mkdir(parents=True, exist_ok=True)
    if not args.table:
        judge = sample_quality.judge(sample_quality.MNIST_DIR, sample_quality.JUDGE_CACHE, console)
        for model in args.models:
            for epsilon in args.epsilons:
                path = args.out / f"row-{row_prefix(args.regime)}{model}-eps{epsilon:g}.json"
                if path.is_file() and not args.force:
                    continue
                row = run_row(model, epsilon, args, judge)
                row["date"], row["machine"] = date.today().isoformat(), machine()
                path.write_text(json.dumps(row, indent=2))
                console.print(row)
    order = {eps: i for i, eps in enumerate(EPSILONS)}
    rows = [json.loads(p.read_text()) for p in args.out.glob("row-*.json")]
    rows = [r for r in rows if r.get("regime", "utility") == args.regime]
    rows.sort(key=lambda r: (r["model"] != "vae", order.get(r["target_epsilon"] or 0.0, 99)))
    if rows:
        meta = {"date": max(r["date"] for r in rows), "machine": rows[0]["machine"], "regime": args.regime}
        text = table(rows, meta)
        stem = f"results-{args.regime}"
        (args.out / f"{stem}.md").write_text(text)
        (args.out / f"{stem}.json").write_text(json.dumps(rows, indent=2))
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
