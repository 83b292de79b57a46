"""genlab's trainer against the plain PyTorch loop a user would write, side by side, interleaved.

For each case (a model and preset at a batch size) it times, in turns (genlab, plain, genlab, plain,
...) so that machine noise hits both alike, a fresh subprocess each time:

- genlab: the `genlab train` code path itself (a `Trainer` on a synthetic MNIST-shaped dataset, step
  hooks timing each step; epoch-end work is outside the measured steps);
- plain: the same networks (built by genlab with the same seed) trained by a 30-line loop: a
  DataLoader over a TensorDataset, `.to(device)` per batch, zero_grad/backward/step, and the same
  objective (GAN: the article's algorithm, D on real and G(z).detach(), then G on a fresh z with
  the non-saturating loss; VAE: Bernoulli NLL + KL).

It reports images/s over the steps after a warm-up (median of --repeats runs), the ratio to the plain
loop (median of the per-repeat ratios), the time to the first step (building the model and data
included) and the peak memory (the worker's max RSS; on CUDA also torch.cuda.max_memory_allocated). JSON to --out, a markdown table next
to it. The article's Keras loop runs only where TensorFlow is importable; it is skipped (with the
reason in the table) otherwise.

    flock /tmp/genlab-cpu.lock python benchmarks/speed.py                # all cases, 5 repeats
    python benchmarks/speed.py --cases gan-article --repeats 3 --loops genlab plain genlab-two-forward

`--loops` also takes genlab variants that switch one speed lever off or on (see VARIANTS), which is how
the README's lever table is measured. `--ddp N` reports data-parallel scaling instead: 1 process against N
torchrun/gloo processes, by running benchmarks/ddp_scaling.py --processes N.
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from families import machine  # noqa: E402  (the machine line every benchmark table carries)


@dataclass(frozen=True)
class Case:
    model: str
    preset: str
    batch_size: int
    what: str


CASES: dict[str, Case] = {
    "gan-article": Case("gan", "article", 128, "the article's MLP GAN"),
    "gan-default": Case("gan", "default", 64, "default GAN (MLP, BatchNorm G, minibatch-stddev D)"),
    "gan-dcgan": Case("gan", "dcgan", 64, "conv GAN (DCGAN, widths 32)"),
    "vae-default": Case("vae", "default", 64, "MLP VAE"),
}

# genlab runs with one lever changed from genlab's defaults: the lever table of the README.
VARIANTS: dict[str, dict] = {
    "genlab": {},
    "genlab-two-forward": {"levers": {"share_fake_batch": False}},  # G forward per D and per G update
    "genlab-unfused": {"levers": {"fused_optimizers": False}},  # torch's default Adam implementation
    "genlab-bf16": {"precision": "bf16"},
    "genlab-compile": {"compile": True},
    "genlab-1-thread": {"threads": 1},  # torch's default here is one thread per core (2)
}
LOOPS = (*VARIANTS, "plain")


def synthetic_dataset(n: int, seed: int = 0):
    """n random MNIST-shaped uint8 images with labels: speed does not depend on what the pixels show."""
    from genlab.data.sources import ImageDataset

    generator = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, 1, 28, 28), dtype=torch.uint8, generator=generator)
    labels = torch.randint(0, 10, (n,), generator=generator)
    return ImageDataset("synthetic", images, labels, [str(k) for k in range(10)])


def peak_memory(device: torch.device) -> dict:
    memory = {"peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    if device.type == "cuda":
        memory["peak_device_mib"] = torch.cuda.max_memory_allocated(device) / 2**20
    return memory


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_genlab(
    case: Case,
    batch_size: int,
    warmup: int,
    steps: int,
    device: str = "cpu",
    precision: str = "fp32",
    compile_step: bool = False,
    levers: dict | None = None,
    seed: int = 0,
    dataset=None,
    extra: dict | None = None,
    compile_options: dict | None = None,
) -> dict:
    """Train `warmup + steps` steps with genlab's Trainer (what `genlab train` runs) and time them.
    `compile_options` go to torch.compile (gpu_check's dry run uses backend "eager")."""
    from rich.console import Console

    from genlab.models.gan import GAN
    from genlab.runs import resolve_config
    from genlab.training import speed
    from genlab.training import trainer as trainer_module
    from genlab.training.trainer import Trainer

    levers = dict(levers or {})
    GAN.share_fake_batch = levers.pop("share_fake_batch", True)  # a model-level lever
    speed.set_levers(**levers)
    dataset = dataset or synthetic_dataset(batch_size * (warmup + steps + 2), seed)
    flags = {"model": case.model, "preset": case.preset, "batch_size": batch_size, "epochs": 1}
    flags.update(device=device, seed=seed, precision=precision, compile=compile_step, **(extra or {}))
    config = resolve_config(flags=flags)
    times: list[float] = []

    def on_step(trainer) -> None:
        count = len(times) + 1
        if count in (1, warmup, warmup + steps):  # sync only where a time is read: no per-step stall
            _sync(trainer.device)
        times.append(time.perf_counter())
        if count >= warmup + steps:
            trainer.request_stop()

    compile_networks = trainer_module.compile_networks
    if compile_options:
        trainer_module.compile_networks = functools.partial(speed.compile_networks, **compile_options)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            start = time.perf_counter()
            trainer = Trainer(config, Path(tmp) / "run", dataset=dataset, console=Console(quiet=True))
            trainer.add_step_hook(on_step)
            trainer.fit()
    finally:
        speed.set_levers()  # back to the defaults
        GAN.share_fake_batch = True
        trainer_module.compile_networks = compile_networks
    return _figures(times, start, warmup, steps, batch_size, trainer.device)


def _figures(times: list[float], start: float, warmup: int, steps: int, batch: int, device) -> dict:
    measured = times[warmup + steps - 1] - times[warmup - 1] if warmup else times[steps - 1] - start
    return {
        "images_per_s": steps * batch / measured,
        "first_step_s": times[0] - start,
        **peak_memory(torch.device(device)),
    }


def time_plain(
    case: Case, batch_size: int, warmup: int, steps: int, device: str = "cpu", seed: int = 0
) -> dict:
    """The loop a user would write around the same networks (built by genlab, same seed, same init)."""
    import torch.nn.functional as F
    from torch.utils.data import DataLoader, TensorDataset

    from genlab.runs import build_model, model_config_values, resolve_config

    dataset = synthetic_dataset(batch_size * (warmup + steps + 2), seed)
    start = time.perf_counter()
    config = resolve_config(flags={"model": case.model, "preset": case.preset})
    torch.manual_seed(seed)
    model = build_model(case.model, model_config_values(config, (1, 28, 28), 10)).to(device)
    c = model.config
    images = dataset.images.float() / 255.0
    if model.input_range == "tanh":
        images = images * 2.0 - 1.0
    loader = DataLoader(TensorDataset(images), batch_size=batch_size, shuffle=True, drop_last=True)
    times: list[float] = []
    model.train()
    if case.model == "gan":
        generator, discriminator = model.generator, model.discriminator
        opt_d = torch.optim.Adam(discriminator.parameters(), lr=c.lr_d, betas=(c.beta1, c.beta2))
        opt_g = torch.optim.Adam(generator.parameters(), lr=c.lr_g, betas=(c.beta1, c.beta2))
        for (real,) in loader:
            real = real.to(device)
            ones = torch.ones(real.shape[0], device=device)
            zeros = torch.zeros(real.shape[0], device=device)
            fake = generator(torch.randn(real.shape[0], c.latent_dim, device=device)).detach()
            loss_d = F.binary_cross_entropy_with_logits(
                discriminator(real), ones
            ) + F.binary_cross_entropy_with_logits(discriminator(fake), zeros)
            opt_d.zero_grad()
            loss_d.backward()
            opt_d.step()
            fake = generator(torch.randn(real.shape[0], c.latent_dim, device=device))
            loss_g = F.binary_cross_entropy_with_logits(discriminator(fake), ones)
            opt_g.zero_grad()
            loss_g.backward()
            opt_g.step()
            if len(times) + 1 in (1, warmup, warmup + steps):
                _sync(torch.device(device))
            times.append(time.perf_counter())
            if len(times) >= warmup + steps:
                break
    else:  # the VAE: reparameterized z, Bernoulli NLL + KL, one optimizer
        optimizer = torch.optim.Adam(model.parameters(), lr=c.lr)
        for (x,) in loader:
            x = x.to(device)
            mu, logvar = model.encode(x)
            z = mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)
            logits = model.decode_logits(z)
            nll = F.binary_cross_entropy_with_logits(logits, x, reduction="none").flatten(1).sum(1)
            kl = 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar).sum(1)
            loss = (nll + c.beta * kl).mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            if len(times) + 1 in (1, warmup, warmup + steps):
                _sync(torch.device(device))
            times.append(time.perf_counter())
            if len(times) >= warmup + steps:
                break
    return _figures(times, start, warmup, steps, batch_size, device)


def run_worker(spec: dict) -> dict:
    case = CASES[spec["case"]]
    args = (case, spec["batch_size"], spec["warmup"], spec["steps"], spec["device"])
    if spec["loop"] == "plain":
        return time_plain(*args, seed=spec["seed"])
    variant = VARIANTS[spec["loop"]]
    if variant.get("threads"):
        torch.set_num_threads(variant["threads"])
    return time_genlab(
        *args,
        precision=variant.get("precision", "fp32"),
        compile_step=variant.get("compile", False),
        levers=variant.get("levers"),
        seed=spec["seed"],
    )


def keras_skip_reason() -> str | None:
    """None when TensorFlow is importable (the Keras loop could run), else why it is skipped."""
    if importlib.util.find_spec("tensorflow") is None:
        return "TensorFlow is not installed"
    return "the Keras loop is not written yet (TensorFlow is importable)"


def measure(args) -> dict:
    rows: dict[tuple[str, str], list[dict]] = {}
    for repeat in range(args.repeats):
        for name in args.cases:
            for loop in args.loops:  # round-robin: each repeat runs every loop of every case once
                spec = {
                    "case": name,
                    "loop": loop,
                    "batch_size": args.batch_size or CASES[name].batch_size,
                    "warmup": args.warmup,
                    "steps": args.steps,
                    "device": args.device,
                    "seed": args.seed,
                }
                done = subprocess.run(
                    [sys.executable, __file__, "--worker", json.dumps(spec)],
                    capture_output=True,
                    text=True,
                    check=False,
                )
                if done.returncode != 0:
                    raise SystemExit(f"{name} {loop} failed:\n{done.stderr[-3000:]}")
                result = json.loads(done.stdout.strip().splitlines()[-1])
                rows.setdefault((name, loop), []).append(result)
                print(
                    f"repeat {repeat + 1}: {name:12s} {loop:20s} {result['images_per_s']:9.0f} img/s",
                    flush=True,
                )
    table = []
    for (name, loop), runs in rows.items():
        plain = rows.get((name, "plain"))
        median = statistics.median(r["images_per_s"] for r in runs)
        row = {
            "case": name,
            "what": CASES[name].what,
            "loop": loop,
            "batch_size": args.batch_size or CASES[name].batch_size,
            "images_per_s": median,
            "runs_images_per_s": [r["images_per_s"] for r in runs],
            "first_step_s": statistics.median(r["first_step_s"] for r in runs),
            "peak_rss_mib": max(r["peak_rss_mib"] for r in runs),
        }
        default = rows.get((name, "genlab"))
        if default and loop not in ("genlab", "plain"):  # a lever switched: what genlab's default gains
            pairs = zip(default, runs)
            row["genlab_gain"] = statistics.median(a["images_per_s"] / b["images_per_s"] for a, b in pairs)
        if "peak_device_mib" in runs[0]:
            row["peak_device_mib"] = max(r["peak_device_mib"] for r in runs)
        if plain:  # the median of the per-repeat ratios: each pair ran back to back, under the same noise
            pairs = zip(runs, plain)
            row["ratio_to_plain"] = statistics.median(a["images_per_s"] / b["images_per_s"] for a, b in pairs)
        table.append(row)
    return {
        "machine": machine(),
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "command": "python benchmarks/speed.py " + " ".join(sys.argv[1:]),
        "device": args.device,
        "warmup_steps": args.warmup,
        "measured_steps": args.steps,
        "repeats": args.repeats,
        "rows": table,
        "skipped": [{"loop": "keras", "reason": keras_skip_reason()}],
    }


def markdown(results: dict) -> str:
    lines = [
        f"Machine: {results['machine']}; device {results['device']}; {results['date']}.",
        f"Command: `{results['command']}`",
        f"Median of {results['repeats']} interleaved runs, {results['measured_steps']} steps each after "
        f"{results['warmup_steps']} warm-up steps.",
        "",
        "| case | loop | batch | images/s | x plain loop | genlab's gain over it | first step (s) "
        "| peak RSS (MiB) |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for row in results["rows"]:
        ratio = f"{row['ratio_to_plain']:.2f}" if "ratio_to_plain" in row else "-"
        gain = f"{row['genlab_gain']:.2f}x" if "genlab_gain" in row else "-"
        lines.append(
            f"| {row['case']} | {row['loop']} | {row['batch_size']} | {row['images_per_s']:.0f} | {ratio} "
            f"| {gain} | {row['first_step_s']:.2f} | {row['peak_rss_mib']:.0f} |"
        )
    for skipped in results["skipped"]:
        if skipped["reason"]:
            lines.append(f"\n{skipped['loop']} loop: skipped ({skipped['reason']}).")
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    parser.add_argument("--loops", nargs="+", default=["genlab", "plain"], choices=LOOPS)
    parser.add_argument("--batch-size", type=int, default=0, help="0: each case's own batch size")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--ddp", type=int, default=0, help="scaling over N torchrun processes (ddp_scaling.py)"
    )
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "speed.json")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(run_worker(json.loads(args.worker))))
        return 0
    if args.ddp:
        if args.ddp < 2:
            parser.error("--ddp N compares 1 process with N: N must be >= 2")
        scaling = Path(__file__).with_name("ddp_scaling.py")
        return subprocess.call([sys.executable, str(scaling), "--processes", str(args.ddp)])
    if args.warmup < 1 or args.steps < 1 or args.repeats < 1:
        parser.error("--warmup, --steps and --repeats must be >= 1")
    results = measure(args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    args.out.with_suffix(".md").write_text(markdown(results))
    print(markdown(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
