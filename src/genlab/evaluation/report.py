"""What users see of an evaluation: eval.json, eval.md with its PNGs, a rich table, and `compare`.

RUN_DIR/eval.json            every number, the extractor's name and hash, references, timings
RUN_DIR/eval.md              the same as a readable report, linking the PNGs below
RUN_DIR/eval_samples.png     the first 64 samples
RUN_DIR/eval_nearest.png     the closest (sample, nearest training image) pairs, sample on top
RUN_DIR/eval_classes.png     the domain classifier's predicted-class histogram
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch

from .. import provenance, viz
from ..errors import GenlabError
from ..training.checkpoint import write_json_atomic

EVAL_JSON, EVAL_MD = "eval.json", "eval.md"
SAMPLES_PNG, NEAREST_PNG, CLASSES_PNG = "eval_samples.png", "eval_nearest.png", "eval_classes.png"

# (key in headline(), column title, format, lower is better?) in display order
HEADLINE = [
    ("fid", "FID", "{:.2f}", True),
    ("fid_real_test", "FID floor (real test)", "{:.2f}", True),
    ("kid_mean", "KID", "{:.4f}", True),
    ("precision", "precision", "{:.3f}", False),
    ("recall", "recall", "{:.3f}", False),
    ("density", "density", "{:.3f}", False),
    ("coverage", "coverage", "{:.3f}", False),
    ("classifier_score", "classifier score", "{:.2f}", False),
    ("class_entropy", "class entropy", "{:.3f}", False),
    ("rarest_share", "rarest class", "{:.3f}", False),
    ("label_accuracy", "label acc.", "{:.3f}", False),
    ("near_copy_share", "near copies", "{:.3f}", True),
    ("nll_bits_per_dim", "NLL bits/dim", "{:.4f}", True),
    ("elbo_bits_per_dim", "-ELBO bits/dim", "{:.4f}", True),
    ("recon_mse", "recon. MSE", "{:.5f}", True),
    ("recon_psnr", "PSNR dB", "{:.2f}", False),
    ("recon_ssim", "SSIM", "{:.3f}", False),
]


def headline(result: dict[str, Any]) -> dict[str, float]:
    """The scalar metrics of an eval result under flat names (the columns of tables and compare)."""
    m = result.get("metrics", {})
    flat = {k: m[k] for k in ("fid", "fid_real_test", "kid_mean", "kid_std", "classifier_score") if k in m}
    flat.update({k: m[k] for k in ("precision", "recall", "density", "coverage", "label_accuracy") if k in m})
    if "class_coverage" in m:
        flat["class_entropy"] = m["class_coverage"]["normalized_entropy"]
        flat["rarest_share"] = m["class_coverage"]["rarest_share"]
    if "memorization" in m:
        flat["near_copy_share"] = m["memorization"]["near_copy_share"]
    if "likelihood" in m:
        flat["nll_bits_per_dim"] = m["likelihood"]["nll_bits_per_dim"]
        flat["elbo_bits_per_dim"] = m["likelihood"]["elbo_bits_per_dim"]
        flat["nll_nats"] = m["likelihood"]["nll_nats"]
    if "reconstruction" in m:
        for key in ("mse", "psnr", "ssim"):
            flat[f"recon_{key}"] = m["reconstruction"][key]
    return flat


def _format(key: str, value: float) -> str:
    fmt = next((f for k, _, f, _ in HEADLINE if k == key), "{:.4g}")
    return fmt.format(value) if isinstance(value, (int, float)) and math.isfinite(value) else str(value)


def extractor_line(result: dict[str, Any]) -> str:
    parts = []
    if "extractor" in result:
        e = result["extractor"]
        parts.append(f"features: {e['name']} sha256 {e['sha256'][:12]}")
    if "classifier" in result and result.get("classifier") != result.get("extractor"):
        c = result["classifier"]
        parts.append(f"classes: {c['name']} sha256 {c['sha256'][:12]}")
    return "; ".join(parts)


# --- files -----------------------------------------------------------------------------------------------
def write_report(result: dict[str, Any], out_dir: str | Path) -> list[Path]:
    """Write eval.json, eval.md and the PNGs into out_dir; returns the paths written."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    images = result.get("_images", {})
    public = {k: v for k, v in result.items() if not k.startswith("_")}
    written = []
    samples = images.get("samples")
    record = result.get("_provenance")
    if samples is not None:
        viz.save_grid(samples[:64], out / SAMPLES_PNG, provenance=record)
        written.append(out / SAMPLES_PNG)
    memorization = public["metrics"].get("memorization")
    if memorization and samples is not None and images.get("train") is not None:
        composite = {**record, "kind": "samples above their nearest training images"} if record else None
        _save_nearest_pairs(memorization, samples, images["train"], out / NEAREST_PNG, composite)
        written.append(out / NEAREST_PNG)
    coverage = public["metrics"].get("class_coverage")
    if coverage:
        save_class_histogram(coverage, out / CLASSES_PNG)
        written.append(out / CLASSES_PNG)
    write_json_atomic(out / EVAL_JSON, public)
    (out / EVAL_MD).write_text(markdown_report(public, {p.name for p in written}))
    return [out / EVAL_JSON, out / EVAL_MD, *written]


def _save_nearest_pairs(
    memorization: dict, samples: torch.Tensor, train: torch.Tensor, path: Path, record: dict | None = None
) -> None:
    pairs = memorization["closest_pairs"]
    top = samples[[p["sample"] for p in pairs]]  # (k, C, H, W)
    bottom = train[[p["train"] for p in pairs]].float() / 255.0  # (k, C, H, W)
    if record:
        record = {**record, "digital_source_type": provenance.IPTC_COMPOSITE}
    viz.save_grid(torch.cat([top, bottom]), path, nrow=len(pairs), scale=3, provenance=record)


def save_class_histogram(coverage: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shares = coverage["shares"]
    names = coverage.get("class_names") or [str(i) for i in range(len(shares))]
    fig, axis = plt.subplots(figsize=(max(4.0, 0.5 * len(shares) + 1.5), 3))
    axis.bar(range(len(shares)), shares, color="#4c72b0")
    axis.axhline(1.0 / len(shares), color="gray", linestyle="--", linewidth=1, label="uniform")
    axis.set_xticks(range(len(shares)))
    axis.set_xticklabels(names, rotation=45 if max(len(n) for n in names) > 2 else 0, ha="right")
    axis.set_ylabel("share of samples")
    axis.set_title(
        f"predicted classes: entropy {coverage['normalized_entropy']:.3f}, rarest {coverage['rarest_share']:.3f}"
    )
    axis.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


DEFINITIONS = {
    "fid": "FID: Frechet distance between Gaussians fitted to real and generated features (lower is better).",
    "kid": "KID: unbiased MMD^2 with a cubic polynomial kernel, mean and std over seeded subsets (lower is better).",
    "prdc": (
        "precision / recall (k=3): share of samples inside the real k-NN manifold / of reals inside the "
        "samples' one; density / coverage: mean count of real k-NN balls holding a sample / k, and share of "
        "real balls holding at least one sample."
    ),
    "classifier_score": "classifier score: exp(E KL(p(y|x) || p(y))) under the domain classifier, 1..classes.",
    "class_coverage": (
        "class coverage: entropy of the predicted-label histogram / log(classes) (1 = uniform) and the "
        "rarest class's share (near 0 = mode collapse)."
    ),
    "label_accuracy": "label accuracy: share of samples the domain classifier assigns the requested class.",
    "memorization": (
        "memorization: a sample is a near copy when it is closer (pixel L2) to a training image than 99% of "
        "held-out test images are."
    ),
    "likelihood": (
        "likelihood: ELBO and the K-sample importance-sampled NLL (Burda et al.) on test images, in nats per "
        "image and bits per dimension (nats / (D ln 2)); NLL <= -ELBO."
    ),
    "reconstruction": "reconstruction: MSE, PSNR (dB) and SSIM of test images and their reconstructions.",
}


def markdown_report(result: dict[str, Any], images: set[str] | None = None) -> str:
    images = images or set()
    lines = [
        f"# genlab eval: {result['run_dir']}",
        "",
        f"- model: **{result['model']}** (preset {result['preset']}), checkpoint {result['checkpoint']} "
        f"(step {result['step']})",
        f"- dataset: {result['dataset']}; {result['n_samples']} samples, seed {result['seed']}",
    ]
    privacy = result.get("privacy")
    if privacy:
        lines.append(
            f"- differential privacy: epsilon {privacy['epsilon']:.3f} spent at delta {privacy['delta']:.3g} "
            f"(DP-SGD on {', '.join(privacy['private_parts'])}, {privacy['steps']} steps, noise multiplier "
            f"{privacy['noise_multiplier']:.3f}, clip {privacy['max_grad_norm']:g}, {privacy['accountant']})"
        )
        lines += [f"- differential privacy note: {note}" for note in privacy.get("notes", [])]
    for key in ("extractor", "classifier"):
        if key in result and (key == "extractor" or result[key] != result.get("extractor")):
            e = result[key]
            accuracy = f", test accuracy {e['test_accuracy']:.4f}" if "test_accuracy" in e else ""
            lines.append(f"- {key}: {e['name']}, sha256 `{e['sha256']}`{accuracy}")
    lines += ["", "## Metrics", "", "| metric | value |", "| --- | --- |"]
    flat = headline(result)
    for key, title, _, lower in HEADLINE:
        if key in flat:
            arrow = "lower is better" if lower else "higher is better"
            lines.append(f"| {title} ({arrow}) | {_format(key, flat[key])} |")
    if "kid_std" in flat:
        lines.append(f"| KID std over subsets | {flat['kid_std']:.4f} |")
    if "nll_nats" in flat:
        lik = result["metrics"]["likelihood"]
        lines.append(f"| NLL nats/image (K={lik['k']}) | {lik['nll_nats']:.2f} |")
        lines.append(f"| ELBO nats/image | {lik['elbo_nats']:.2f} |")
    lines += ["", "## References and notes", ""]
    lines += [f"- {key}: {text}" for key, text in result.get("references", {}).items()]
    lines += [f"- note: {note}" for note in result.get("notes", [])]
    if SAMPLES_PNG in images:
        lines += ["", "## Samples", "", f"![samples]({SAMPLES_PNG})"]
    memorization = result["metrics"].get("memorization")
    if memorization:
        lines += [
            "",
            "## Memorization",
            "",
            f"{memorization['num_near_copies']} of {memorization['num_samples']} samples "
            f"({memorization['near_copy_share']:.2%}) are near copies (distance < {memorization['threshold']:.3f}, "
            f"the {memorization['threshold_quantile']:.0%} quantile of test-to-train distances). Median "
            f"distance to the nearest training image: samples {memorization['median_sample_distance']:.3f}, "
            f"test images {memorization['median_test_distance']:.3f}.",
        ]
        if NEAREST_PNG in images:
            lines += ["", f"Closest pairs, sample above its nearest training image: ![pairs]({NEAREST_PNG})"]
        lines += ["", "| sample | train image | distance |", "| --- | --- | --- |"]
        lines += [
            f"| {p['sample']} | {p['train']} | {p['distance']:.3f} |" for p in memorization["closest_pairs"]
        ]
    if CLASSES_PNG in images:
        lines += ["", "## Predicted classes", "", f"![class histogram]({CLASSES_PNG})"]
    lines += ["", "## Definitions", ""]
    lines += [f"- {DEFINITIONS[m]}" for m in result.get("metrics_computed", []) if m in DEFINITIONS]
    timings = result.get("timings", {})
    if timings:
        lines += ["", "Timings: " + ", ".join(f"{k[:-2]} {v:.1f}s" for k, v in timings.items())]
    return "\n".join(lines) + "\n"


def print_table(result: dict[str, Any], console=None) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{result['model']}: {result['n_samples']} samples, seed {result['seed']}")
    table.add_column("metric")
    table.add_column("value", justify="right")
    flat = headline(result)
    for key, title, _, lower in HEADLINE:
        if key in flat:
            table.add_row(f"{title} {'↓' if lower else '↑'}", _format(key, flat[key]))
    table.caption = extractor_line(result)
    if result.get("privacy"):
        table.caption += f"; trained with DP: epsilon {result['privacy']['epsilon']:.2f}"
    (console or Console()).print(table)


# --- compare ---------------------------------------------------------------------------------------------
def load_eval(run_dir: str | Path) -> dict[str, Any]:
    path = Path(run_dir) / EVAL_JSON
    if not path.is_file():
        if not Path(run_dir).is_dir():
            raise GenlabError(f"no such run directory: {run_dir}")
        raise GenlabError(f"{run_dir} has no {EVAL_JSON}: run `genlab eval {run_dir}` first")
    try:
        result = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise GenlabError(f"cannot read {path}: {str(exc).splitlines()[0] if str(exc) else exc!r}") from exc
    if not isinstance(result, dict) or not isinstance(result.get("metrics", {}), dict):
        raise GenlabError(
            f"corrupt {path}: expected an object with a 'metrics' object; run `genlab eval` again"
        )
    try:
        headline(result)
    except (KeyError, TypeError, AttributeError) as exc:
        raise GenlabError(
            f"corrupt {path}: a metric is missing or malformed ({exc}); run `genlab eval` again"
        ) from exc
    bad = [key for key, value in headline(result).items() if not isinstance(value, (int, float))]
    if bad:
        raise GenlabError(f"corrupt {path}: metric {bad[0]!r} is not a number; run `genlab eval` again")
    return result


def comparison_rows(run_dirs: list[str | Path]) -> tuple[list[dict[str, Any]], list[str]]:
    """One row per run (name, dataset, extractor, headline metrics) and warnings about comparability."""
    rows = []
    for run_dir in run_dirs:
        result = load_eval(run_dir)
        rows.append(
            {
                "run": str(run_dir),
                "model": result.get("model"),
                "dataset": result.get("dataset"),
                "n": result.get("n_samples"),
                "extractor": extractor_line(result),
                **headline(result),
            }
        )
    warnings = []
    for field in ("dataset", "extractor", "n"):
        if len({str(row[field]) for row in rows}) > 1:
            warnings.append(f"runs differ in {field}: their numbers are not directly comparable")
    return rows, warnings


def print_comparison(rows: list[dict[str, Any]], console=None) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="genlab compare")  # one column per run: narrow terminals fit a few runs
    table.add_column("metric")
    for index, row in enumerate(rows):
        table.add_column(f"[{index + 1}] {row['model']}", justify="right")
    for key, title, _, lower in HEADLINE:
        if any(key in row for row in rows):
            cells = [_format(key, row[key]) if key in row else "-" for row in rows]
            table.add_row(f"{title} {'↓' if lower else '↑'}", *cells)
    runs = "; ".join(f"[{i + 1}] {row['run']}" for i, row in enumerate(rows))
    table.caption = f"{runs}; " + "; ".join(sorted({row["extractor"] for row in rows}))
    (console or Console()).print(table)


def plot_comparison(rows: list[dict[str, Any]], path: str | Path) -> None:
    """One bar panel per metric, one bar per run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = [(k, t) for k, t, _, _ in HEADLINE if any(k in row for row in rows)]
    if not keys:
        raise GenlabError("the eval.json files hold no metrics to plot")
    cols = min(4, len(keys))
    nrows = math.ceil(len(keys) / cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(3.2 * cols, 2.6 * nrows), squeeze=False)
    labels = [Path(row["run"]).name or row["run"] for row in rows]
    colors = [f"C{i % 10}" for i in range(len(rows))]
    for axis, (key, title) in zip(axes.flat, keys):
        values = [row.get(key, float("nan")) for row in rows]
        axis.bar(range(len(rows)), values, color=colors)
        axis.set_title(title, fontsize=9)
        axis.set_xticks(range(len(rows)))
        axis.set_xticklabels(labels, rotation=30, ha="right", fontsize=7)
    for axis in list(axes.flat)[len(keys) :]:
        axis.axis("off")
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
