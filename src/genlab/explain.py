"""`genlab explain`: what a run's latent space encodes, and what its GAN discriminator looks at.

- traversal: the most active latent dimensions, each swept while the others stay at a base code. Active
  means: mean KL(q(z_i|x) || N(0, 1)) over data for a VAE (dimensions with ~0 KL are unused), the
  variance of the data's codes for an autoencoder, and for a model without an encoder (the GAN) the
  pixel variance of the images along a sweep of that dimension.
- class directions (models with an encoder, on labelled data): d_k = m_k - m, class k's mean code minus
  the mean of the class means; decoding m + a d_k shows what moving along it does, and the "swap" test
  moves other classes' codes by m_k - m_y and checks where their decodings re-encode.
- saliency (models with a discriminator): |d logit / d pixel| of D's score on samples and real images.
"""

from __future__ import annotations

import inspect
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor

from . import provenance, viz

TRAVERSAL_PNG, CLASSES_PNG, SALIENCY_PNG, REPORT_MD = (
    "explain_traversal.png",
    "explain_classes.png",
    "explain_saliency.png",
    "explain.md",
)
SWEEP_SDS = 3.0  # traversals span +-3 standard deviations of the dimension
SWAP_IMAGES = 300
SMOOTHGRAD_COPIES, SMOOTHGRAD_NOISE = 16, 0.15  # noisy copies per saliency map; noise std / input range


@dataclass
class ExplainReport:
    written: list[Path] = field(default_factory=list)
    seconds: float = 0.0
    markdown: str = ""
    figures: dict = field(default_factory=dict)  # the measured numbers, for tests and benchmarks


def explain_run(
    run, out_dir: str | Path, dims: int = 8, steps: int = 9, n: int = 2000, seed: int = 0
) -> ExplainReport:
    """Write explain.md and its PNGs into out_dir; returns what was written and measured."""
    clock = time.perf_counter()
    model = run.model.eval()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    report = ExplainReport()
    images, labels = _data(run, n, seed)
    lines = [
        f"# genlab explain: {run.run_dir}",
        "",
        f"model `{model.name}` (preset `{run.config.preset}`), "
        f"checkpoint `{run.checkpoint.name}`, {len(images)} `{run.config.data}` training images, seed {seed}.",
        "",
    ]
    lines += _traversal(model, images, labels, dims, steps, seed, out, run, report)
    lines += _class_directions(model, images, labels, steps, out, run, report)
    lines += _saliency(model, images, labels, seed, out, run, report)
    report.seconds = time.perf_counter() - clock
    lines += [f"Explained in {report.seconds:.1f} s."]
    report.markdown = "\n".join(lines) + "\n"
    (out / REPORT_MD).write_text(report.markdown)
    report.written.insert(0, out / REPORT_MD)
    return report


# --- shared helpers ----------------------------------------------------------------------------------------
def _data(run, n: int, seed: int) -> tuple[Tensor, Tensor | None]:
    """Up to n seeded training images in [0, 1] (N, C, H, W) and their labels (or None)."""
    from .data import load_dataset

    dataset = load_dataset(run.config.data, "train")
    pick = torch.randperm(len(dataset.images), generator=torch.Generator().manual_seed(seed))[:n]
    images = dataset.images[pick].float() / 255.0
    labels = dataset.labels[pick] if dataset.labels is not None else None
    return images.to(run.model.device), labels.to(run.model.device) if labels is not None else None


def _conditional(model) -> bool:
    return bool(getattr(model, "is_conditional", False))


def _label_kwargs(model, labels: Tensor | None, n: int) -> dict:
    """labels= for conditional models (class 0 when none are given), nothing for the others."""
    if not _conditional(model):
        return {}
    if labels is None:
        labels = torch.zeros(n, dtype=torch.long, device=model.device)
    return {"labels": labels}


@torch.no_grad()
def _generate(model, z: Tensor, labels: Tensor | None = None) -> Tensor:
    """Decode codes (N, d) in chunks of 1024 -> images (N, C, H, W) in [0, 1]."""
    chunks = []
    for start in range(0, len(z), 1024):
        part = z[start : start + 1024]
        part_labels = labels[start : start + 1024] if labels is not None else None
        chunks.append(model.generate(part, **_label_kwargs(model, part_labels, len(part))))
    return torch.cat(chunks)


@torch.no_grad()
def _encode(model, images: Tensor, labels: Tensor | None):
    """Codes (N, d) and, for a VAE, the log variances (N, d) (else None)."""
    means, logvars = [], []
    for start in range(0, len(images), 1024):
        chunk = images[start : start + 1024]
        chunk_labels = labels[start : start + 1024] if labels is not None else None
        encoded = model.encode(chunk, **_label_kwargs(model, chunk_labels, len(chunk)))
        if isinstance(encoded, tuple):
            means.append(encoded[0])
            logvars.append(encoded[1])
        else:
            means.append(encoded)
    return torch.cat(means), (torch.cat(logvars) if logvars else None)


def _has_encoder(model) -> bool:
    return hasattr(model, "encode")


# --- latent traversal --------------------------------------------------------------------------------------
def rank_dimensions(model, images: Tensor, labels: Tensor | None, steps: int):
    """Per-dimension activity scores (d,), what they measure, and the base code and per-dimension
    spread (each (d,)) that a traversal sweeps around, with words for the base."""
    d = model.config.latent_dim
    if not _has_encoder(model):  # no encoder: how much the images change along a sweep from the prior mean
        base, spread = torch.zeros(d, device=model.device), torch.ones(d, device=model.device)
        scores = _sweep_variance(model, base, spread, steps)
        criterion = f"mean pixel variance of the images along a +-{SWEEP_SDS:g} sd sweep from z = 0"
        return scores, criterion, base, spread, "prior mean (z = 0)"
    codes, logvars = _encode(model, images, labels)
    if logvars is None:  # autoencoder: how much the data's codes vary along each dimension
        return codes.var(0), "variance of the images' codes", codes.mean(0), codes.std(0), "codes' mean"
    # VAE: KL of each dimension's posterior against the N(0, 1) prior; an unused dimension has ~0
    scores = (-0.5 * (1 + logvars - codes.pow(2) - logvars.exp())).mean(0)
    zeros = torch.zeros(d, device=codes.device)
    return (
        scores,
        "mean KL(q(z_i|x) || N(0, 1)) over the images, nats",
        zeros,
        zeros + 1,
        "prior mean (z = 0)",
    )


def _traversal(model, images, labels, dims, steps, seed, out, run, report) -> list[str]:
    d = model.config.latent_dim
    scores, criterion, base, spread, held_at = rank_dimensions(model, images, labels, steps)
    ranked = torch.argsort(scores, descending=True)[: min(dims, d)]
    offsets = torch.linspace(-SWEEP_SDS, SWEEP_SDS, steps, device=base.device)
    rows = []
    for dim in ranked.tolist():
        codes_row = base.repeat(steps, 1)
        codes_row[:, dim] = base[dim] + offsets * spread[dim]
        rows.append(codes_row)
    grid_images = _generate(model, torch.cat(rows))  # (dims * steps, C, H, W)
    ends = grid_images.view(len(ranked), steps, -1)
    change = (ends[:, -1] - ends[:, 0]).abs().mean(1)  # mean |pixel change| from one end to the other
    path = out / TRAVERSAL_PNG
    viz.save_grid(
        grid_images, path, nrow=steps, provenance=provenance.for_run(run, seed=seed, kind="latent traversal")
    )
    report.written.append(path)
    active = int((scores > 0.01 * scores.max()).sum()) if float(scores.max()) > 0 else 0
    report.figures["traversal"] = {
        "criterion": criterion,
        "dims": ranked.tolist(),
        "scores": [float(scores[i]) for i in ranked],
        "end_to_end_change": change.tolist(),
        "active_dims": active,
    }
    lines = [
        "## Most active latent dimensions",
        "",
        f"Ranked by {criterion}. Each row of `{TRAVERSAL_PNG}` sweeps one dimension from -{SWEEP_SDS:g} to "
        f"+{SWEEP_SDS:g} sd ({steps} steps) with the others held at the {held_at}"
        + (" (class 0: this model is conditional)" if _conditional(model) else "")
        + f". {active} of {d} dimensions score above 1% of the top one.",
        "",
        "| row | dimension | score | mean abs pixel change, end to end |",
        "| ---: | ---: | ---: | ---: |",
    ]
    lines += [
        f"| {r + 1} | {dim} | {float(scores[dim]):.4g} | {float(change[r]):.3f} |"
        for r, dim in enumerate(ranked.tolist())
    ]
    return [*lines, "", f"![traversal]({TRAVERSAL_PNG})", ""]


def _sweep_variance(model, base: Tensor, spread: Tensor, steps: int) -> Tensor:
    """For every dimension: the pixel variance across a sweep of it, averaged over pixels -> (d,)."""
    d = base.shape[0]
    offsets = torch.linspace(-SWEEP_SDS, SWEEP_SDS, steps, device=base.device)
    codes = base.repeat(d, steps, 1)  # (d, steps, d)
    index = torch.arange(d, device=base.device)
    codes[index, :, index] = base[:, None] + offsets[None, :] * spread[:, None]
    images = _generate(model, codes.view(d * steps, d)).view(d, steps, -1)
    return images.var(1).mean(1)


# --- class directions --------------------------------------------------------------------------------------
def _class_directions(model, images, labels, steps, out, run, report) -> list[str]:
    heading = ["## Class directions", ""]
    if labels is None:
        return [*heading, f"`{run.config.data}` has no labels: no class directions.", ""]
    if not _has_encoder(model):
        return [
            *heading,
            f"Class directions need an encoder to place labelled images in latent space; "
            f"`{model.name}` has none (it only decodes), so they are skipped.",
            "",
        ]
    if _conditional(model):
        return [
            *heading,
            "The class is an input of this conditional model, not a direction in its latent space: skipped.",
            "",
        ]
    codes, _ = _encode(model, images, labels)
    classes = sorted(set(labels.tolist()))
    means = torch.stack([codes[labels == k].mean(0) for k in classes])  # (K, d)
    center = means.mean(0)
    directions = means - center  # (K, d): d_k = m_k - m
    alphas = torch.linspace(-1.0, 2.0, steps, device=codes.device)
    path_codes = center + alphas[None, :, None] * directions[:, None, :]  # (K, steps, d)
    grid = _generate(model, path_codes.view(-1, codes.shape[1]))
    path = out / CLASSES_PNG
    viz.save_grid(grid, path, nrow=steps, provenance=provenance.for_run(run, kind="class directions"))
    report.written.append(path)
    baseline, swaps = _swap_test(model, codes, labels, means, classes)
    report.figures["classes"] = {"classes": classes, "nearest_mean_accuracy": baseline, "swap_success": swaps}
    mean_swap = sum(swaps.values()) / len(swaps)
    lines = [
        *heading,
        f"d_k = (mean code of class k) - (mean of the {len(classes)} class means). Row k of `{CLASSES_PNG}` "
        f"decodes m + a d_k for a from -1 to 2 ({steps} steps; a = 1 is class k's mean code).",
        "",
        f"Swap test: {min(SWAP_IMAGES, len(codes))} images' codes z of class y are moved to z + m_k - m_y for every "
        f"other class k, decoded and re-encoded; the share whose new code lies nearest class k's mean "
        f"(the same nearest-class-mean rule puts {baseline:.1%} of the unmoved codes in their own class): "
        f"{mean_swap:.1%} on average.",
        "",
        "| class | " + " | ".join(str(k) for k in classes) + " |",
        "| --- |" + " ---: |" * len(classes),
        "| moved there and re-encoded there | " + " | ".join(f"{swaps[k]:.0%}" for k in classes) + " |",
        "",
        f"![classes]({CLASSES_PNG})",
        "",
    ]
    return lines


@torch.no_grad()
def _swap_test(model, codes, labels, means, classes) -> tuple[float, dict[int, float]]:
    count = min(SWAP_IMAGES, len(codes))
    codes, labels = codes[:count], labels[:count]
    index = {k: i for i, k in enumerate(classes)}
    own = torch.tensor([index[k] for k in labels.tolist()], device=codes.device)

    def nearest(z: Tensor) -> Tensor:
        return torch.cdist(z, means).argmin(1)

    baseline = float((nearest(codes) == own).float().mean())
    swaps = {}
    for k in classes:
        others = own != index[k]
        moved = codes[others] + means[index[k]] - means[own[others]]
        recoded, _ = _encode(model, _generate(model, moved), None)
        swaps[k] = float((nearest(recoded) == index[k]).float().mean())
    return baseline, swaps


# --- discriminator saliency --------------------------------------------------------------------------------
def _saliency(model, images, labels, seed, out, run, report) -> list[str]:
    score = _discriminator(model)
    if score is None:
        return []
    count = 8
    generator = torch.Generator().manual_seed(seed)
    sample_labels = (
        (torch.arange(count, device=model.device) % model.config.num_classes) if _conditional(model) else None
    )
    fakes = _generate(model, model.sample_latent(count, generator), sample_labels)
    real_labels = labels[:count] if labels is not None else None
    fake_maps, fake_p = _input_gradients(model, score, fakes, sample_labels, seed=seed)
    real_maps, real_p = _input_gradients(model, score, images[:count], real_labels, seed=seed)
    stroke_share = _stroke_share(fake_maps, fakes), _stroke_share(real_maps, images[:count])
    stroke_area = (
        float((fakes.amax(1) > 0.5).float().mean()),
        float((images[:count].amax(1) > 0.5).float().mean()),
    )
    rows = [_gray_rgb(fakes), _heat(fake_maps), _gray_rgb(images[:count]), _heat(real_maps)]
    path = out / SALIENCY_PNG
    record = provenance.for_run(run, seed=seed, kind="discriminator saliency", composite=True)
    viz.save_grid(torch.cat(rows), path, nrow=count, provenance=record)
    report.written.append(path)
    report.figures["saliency"] = {
        "d_prob_samples": fake_p,
        "d_prob_real": real_p,
        "stroke_share_samples": stroke_share[0],
        "stroke_share_real": stroke_share[1],
    }
    return [
        "## What the discriminator looks at",
        "",
        f"`{SALIENCY_PNG}`: {count} samples, their saliency maps, {count} real training images, theirs. A map is "
        f"|d logit / d pixel| of D's score for that image, averaged over {SMOOTHGRAD_COPIES} copies with "
        f"Gaussian noise of {SMOOTHGRAD_NOISE:.0%} of the input range (SmoothGrad), max over channels, scaled "
        "to its own maximum: bright = changing this pixel moves D's verdict most.",
        "",
        "| images | mean D(x) | share of saliency on stroke pixels (> 0.5) | stroke pixels' share of the image |",
        "| --- | ---: | ---: | ---: |",
        f"| samples | {fake_p:.3f} | {stroke_share[0]:.1%} | {stroke_area[0]:.1%} |",
        f"| real | {real_p:.3f} | {stroke_share[1]:.1%} | {stroke_area[1]:.1%} |",
        "",
        f"![saliency]({SALIENCY_PNG})",
        "",
    ]


def _discriminator(model):
    """A function (images in the model's input range, labels) -> (B,) logits, or None without a D."""
    if callable(getattr(model, "discriminate", None)):
        takes_labels = "labels" in inspect.signature(model.discriminate).parameters
        return lambda x, labels: (
            model.discriminate(x, labels=labels) if takes_labels else model.discriminate(x)
        )
    if isinstance(getattr(model, "discriminator", None), torch.nn.Module):
        return lambda x, labels: model.discriminator(x.flatten(1)).view(len(x))
    return None


def _input_gradients(
    model, score, images: Tensor, labels: Tensor | None, copies: int = SMOOTHGRAD_COPIES, seed: int = 0
) -> tuple[Tensor, float]:
    """SmoothGrad (Smilkov et al. 2017) saliency per image (N, H, W): |mean over `copies` noisy copies of
    d logit_i / d x_i|, max over channels, scaled to the image's maximum. Raw input gradients of an MLP
    are speckle; averaging over noise of 15% of the input range keeps what is stable. Each logit is taken
    in its batch's context (D may look at batch statistics). Also D's mean probability on the clean batch."""
    clean = (images * 2.0 - 1.0 if model.input_range == "tanh" else images).detach()
    noise_std = SMOOTHGRAD_NOISE * (2.0 if model.input_range == "tanh" else 1.0)
    generator = torch.Generator().manual_seed(seed)
    total = torch.zeros_like(clean)
    with torch.enable_grad():
        for _ in range(copies):
            x = (clean + noise_std * torch.randn(clean.shape, generator=generator).to(clean)).requires_grad_(
                True
            )
            logits = score(x, labels)
            total += torch.stack(
                [torch.autograd.grad(logits[i], x, retain_graph=True)[0][i] for i in range(len(x))]
            )
    with torch.no_grad():
        probability = float(torch.sigmoid(score(clean, labels)).mean())
    maps = (total / copies).abs().amax(1)  # (N, H, W)
    maps = maps / maps.flatten(1).amax(1).clamp_min(1e-12)[:, None, None]
    return maps, probability


def _stroke_share(maps: Tensor, images: Tensor) -> float:
    stroke = (images.amax(1) > 0.5).float()
    return float((maps * stroke).sum() / maps.sum().clamp_min(1e-12))


def _gray_rgb(images: Tensor) -> Tensor:
    return images.expand(-1, 3, -1, -1) if images.shape[1] == 1 else images


def _heat(maps: Tensor) -> Tensor:
    """(N, H, W) in [0, 1] -> (N, 3, H, W) through matplotlib's inferno colour map."""
    from matplotlib import colormaps

    rgb = colormaps["inferno"](maps.cpu().numpy())[..., :3]  # (N, H, W, 3)
    return torch.from_numpy(rgb).float().permute(0, 3, 1, 2).to(maps.device)
