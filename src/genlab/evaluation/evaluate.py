"""`evaluate_run`: every applicable metric of a trained run, seeded, as one JSON-friendly dict.

References, stated in every report: generated samples are compared with the run's own training split
(FID, KID, precision/recall, density/coverage, as is standard); reconstruction and likelihood use the
test split; the memorization check measures samples against the training split with the test split as
the yardstick. `quick_eval` is the cheap subset the trainer runs every `eval_every` epochs.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import Tensor

from .. import __version__, provenance
from ..data import ImageDataset, load_dataset
from ..errors import ConfigError, DataError
from ..metrics.classifier import class_coverage, classifier_score
from ..metrics.distribution import (
    feature_statistics,
    frechet_distance,
    kid,
    precision_recall_density_coverage,
)
from ..metrics.image_quality import mse, psnr, ssim
from ..metrics.memorization import memorization_report
from ..models.base import GenerativeModel
from .extractors import ClassifierExtractor, get_classifier, get_extractor
from .real_stats import real_statistics

METRICS = (
    "fid",
    "kid",
    "prdc",
    "classifier_score",
    "class_coverage",
    "label_accuracy",
    "memorization",
    "likelihood",
    "reconstruction",
)
SAMPLE_CHUNK = 500  # images per sampling call; each chunk has its own seed, so n never changes a sample
PRDC_K = 3
KID_SUBSETS, KID_SUBSET_SIZE = 100, 1000
MIN_SAMPLES = 10
NEAREST_PAIRS = 8
FID_METHOD = {"domain-classifier": "eigh", "inception-v3": "sqrtm"}  # eigh: exact for singular covariances


def chunk_seed(seed: int, index: int) -> int:
    """A well-mixed 63-bit seed for chunk `index` of a sampling pass seeded with `seed`."""
    state = np.random.SeedSequence([seed & 0xFFFF_FFFF_FFFF_FFFF, index]).generate_state(2, dtype=np.uint32)
    return int(state[0]) << 31 | int(state[1]) >> 1


@torch.no_grad()
def sample_images(
    model: GenerativeModel, n: int, seed: int = 0, labels: Tensor | None = None, chunk: int = SAMPLE_CHUNK
) -> Tensor:
    """n samples (N, C, H, W) in [0, 1] on the CPU, drawn `chunk` at a time, chunk i from its own seed:
    the first m of n samples are the m samples of a smaller call, whatever the device or n."""
    pieces = []
    for index, start in enumerate(range(0, n, chunk)):
        size = min(chunk, n - start)
        generator = torch.Generator().manual_seed(chunk_seed(seed, index))
        part_labels = None if labels is None else labels[start : start + size].to(model.device)
        pieces.append(model.sample(size, labels=part_labels, generator=generator).float().cpu())
    return torch.cat(pieces).clamp(0.0, 1.0)


def applicable_metrics(model: GenerativeModel, labelled: bool) -> dict[str, str | None]:
    """Each metric -> None if it applies to this model and dataset, else the reason it does not."""
    no_labels = "the dataset has no class labels (no domain classifier)"
    return {
        "fid": None,
        "kid": None,
        "prdc": None,
        "classifier_score": None if labelled else no_labels,
        "class_coverage": None if labelled else no_labels,
        "label_accuracy": (
            None
            if model.is_conditional and labelled
            else "the model is not class-conditional"
            if labelled
            else no_labels
        ),
        "memorization": None,
        "likelihood": None
        if hasattr(model, "importance_sampled_nll")
        else "the model has no likelihood (VAE only)",
        "reconstruction": None
        if hasattr(model, "reconstruct")
        else "the model has no encoder (AE and VAE only)",
    }


def resolve_metrics(requested: list[str] | None, model: GenerativeModel, labelled: bool) -> list[str]:
    """The metrics to compute: all applicable ones by default; a requested one that cannot be is an error."""
    reasons = applicable_metrics(model, labelled)
    if not requested:
        return [m for m in METRICS if reasons[m] is None]
    unknown = [m for m in requested if m not in METRICS]
    if unknown:
        raise ConfigError(f"unknown metric {unknown[0]!r}; choose from: {', '.join(METRICS)}")
    for metric in requested:
        if reasons[metric] is not None:
            raise ConfigError(f"cannot compute {metric} for {model.name}: {reasons[metric]}")
    return [m for m in METRICS if m in requested]


def _split_images(name: str, split: str, image_shape: tuple[int, ...]) -> ImageDataset:
    dataset = load_dataset(name, split)
    if tuple(dataset.image_shape) != tuple(image_shape):
        raise DataError(
            f"{name} {split} images are {tuple(dataset.image_shape)} but the model makes {tuple(image_shape)}"
        )
    return dataset


def evaluate_run(
    run,
    n: int = 10_000,
    metrics: list[str] | None = None,
    extractor: str = "classifier",
    seed: int = 0,
    nll_k: int = 100,
    device: str | torch.device = "cpu",
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Evaluate a loaded Run (genlab.load) on its own dataset; returns what eval.json holds, plus the
    samples and training images the report draws (under the private key `_images`)."""
    if n < MIN_SAMPLES:
        raise ConfigError(f"n must be at least {MIN_SAMPLES} samples, got {n}")
    if nll_k < 1:
        raise ConfigError(f"nll_k must be >= 1, got {nll_k}")
    say = log or (lambda text: None)
    timings: dict[str, float] = {}
    clock = time.perf_counter()
    model, name = run.model, run.config.data
    model.to(device).eval()
    train = _split_images(name, "train", model.config.image_shape)
    test = _split_images(name, "test", model.config.image_shape)
    labelled = train.labels is not None and train.num_classes >= 2
    chosen = resolve_metrics(metrics, model, labelled)
    distribution = [m for m in chosen if m in ("fid", "kid", "prdc")]
    class_based = [m for m in chosen if m in ("classifier_score", "class_coverage", "label_accuracy")]

    feature_extractor = get_extractor(extractor, name, device, log=say) if distribution else None
    classifier = None
    if class_based:
        if isinstance(feature_extractor, ClassifierExtractor):
            classifier = feature_extractor
        else:
            classifier = get_classifier(name, device=device, log=say)
    timings["extractor_s"] = time.perf_counter() - clock

    clock = time.perf_counter()
    conditional = "label_accuracy" in chosen
    requested_labels = torch.arange(n) % train.num_classes if conditional else None
    samples = sample_images(model, n, seed, labels=requested_labels)  # (N, C, H, W) in [0, 1]
    timings["sampling_s"] = time.perf_counter() - clock

    result: dict[str, Any] = {
        "genlab_eval_format": 1,
        "genlab_version": __version__,
        "run_dir": str(run.run_dir),
        "model": model.name,
        "preset": run.config.preset,
        "checkpoint": run.checkpoint.name,
        "step": run.state.get("step"),
        "sampling": dict(getattr(run, "sampling_overrides", {})),  # --sampling settings, {} = as trained
        "privacy": run.privacy(),  # the DP accountant's summary (epsilon spent...), None without DP
        "dataset": name,
        "n_samples": n,
        "seed": seed,
        "metrics_computed": chosen,
        "references": {},
        "metrics": {},
        "notes": [],
    }
    values, references = result["metrics"], result["references"]

    clock = time.perf_counter()
    fake_features, probs = _sample_features(samples, feature_extractor, classifier)
    timings["features_s"] = time.perf_counter() - clock
    if feature_extractor is not None:
        clock = time.perf_counter()
        result["extractor"] = feature_extractor.describe()
        values.update(
            _distribution_metrics(
                feature_extractor, fake_features, train, test, name, distribution, seed, references, device
            )
        )
        timings["distribution_s"] = time.perf_counter() - clock
    if classifier is not None:
        clock = time.perf_counter()
        result["classifier"] = classifier.describe()
        if "classifier_score" in chosen:
            values["classifier_score"] = classifier_score(probs)
        if "class_coverage" in chosen:
            values["class_coverage"] = class_coverage(probs, classifier.num_classes)
            values["class_coverage"]["class_names"] = train.class_names
        if conditional:
            values["label_accuracy"] = float((probs.argmax(dim=1) == requested_labels).double().mean())
        timings["class_metrics_s"] = time.perf_counter() - clock
    if "memorization" in chosen:
        clock = time.perf_counter()
        values["memorization"] = memorization_report(  # on the device: 10k x 60k distances add up
            samples.to(device), train.images.to(device), test.images.to(device), top_k=NEAREST_PAIRS
        )
        references["memorization"] = (
            f"nearest of the {len(train)} training images (pixel L2); threshold: the 1% quantile of "
            f"the same distance for the {len(test)} test images"
        )
        timings["memorization_s"] = time.perf_counter() - clock
    held_out = test.images[: min(n, len(test))].float() / 255.0  # (T, C, H, W) in [0, 1]
    # a conditional model encodes and scores each image given its class: p(x | y)
    held_out_labels = test.labels[: len(held_out)] if model.is_conditional else None
    if "reconstruction" in chosen:
        clock = time.perf_counter()
        values["reconstruction"] = _reconstruction_metrics(model, held_out, held_out_labels)
        references["reconstruction"] = f"the first {len(held_out)} images of the test split"
        timings["reconstruction_s"] = time.perf_counter() - clock
    if "likelihood" in chosen:
        clock = time.perf_counter()
        values["likelihood"] = _likelihood_metrics(model, held_out, nll_k, seed, held_out_labels)
        references["likelihood"] = f"the first {len(held_out)} images of the test split"
        result["notes"].append(_likelihood_note(model))
        timings["likelihood_s"] = time.perf_counter() - clock
    result["timings"] = timings
    result["_images"] = {"samples": samples, "train": train.images}
    result["_provenance"] = provenance.for_run(run, seed=seed, kind="eval samples")
    return result


def _single_blas_thread():
    """KID's many small float64 matmuls run in numpy: one BLAS thread is as fast, and several spin
    ~10x slower when another process holds a core. A no-op without threadpoolctl."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return contextlib.nullcontext()
    return threadpool_limits(limits=1, user_api="blas")


def _sample_features(samples: Tensor, extractor, classifier) -> tuple[Tensor | None, Tensor | None]:
    """Features (N, D) for the distribution metrics and class probabilities (N, K), one pass each;
    a single pass when the domain classifier provides both."""
    if extractor is not None and extractor is classifier:
        return classifier.features_and_probs(samples)
    features = extractor.features(samples) if extractor is not None else None
    probs = classifier.probs(samples) if classifier is not None else None
    return features, probs


def _fid_method(extractor) -> str:
    return FID_METHOD.get(extractor.name, "sqrtm")


def _distribution_metrics(
    extractor,
    fake: Tensor,
    train: ImageDataset,
    test: ImageDataset,
    name: str,
    chosen: list[str],
    seed: int,
    references: dict[str, str],
    device: str | torch.device = "cpu",
) -> dict[str, Any]:
    """FID (with the real test split's FID as the floor), KID and PRDC of sample features (N, D) vs the
    train split."""
    real = real_statistics(train, name, "train", extractor)
    n = fake.shape[0]
    out: dict[str, Any] = {}
    method = _fid_method(extractor)
    if "fid" in chosen:
        mu, sigma = feature_statistics(fake)
        out["fid"] = frechet_distance(real.mu, real.sigma, mu, sigma, method=method)
        floor = real_statistics(test, name, "test", extractor)
        out["fid_real_test"] = frechet_distance(real.mu, real.sigma, floor.mu, floor.sigma, method=method)
        references["fid"] = (
            f"all {real.num_images} training images; fid_real_test is the FID of the {floor.num_images} real "
            "test images against the same statistics (the floor a perfect model would reach at that n)"
        )
    reals = real.subset(n)
    if "kid" in chosen:
        size = min(KID_SUBSET_SIZE, n, len(reals))
        with _single_blas_thread():
            out["kid_mean"], out["kid_std"] = kid(reals, fake, KID_SUBSETS, size, seed=seed)
        references["kid"] = (
            f"{KID_SUBSETS} seeded subsets of {size} of the {n} samples and of {len(reals)} fixed training "
            "images (the std is 0 when a subset is the whole set)"
        )
    if "prdc" in chosen:
        out.update(precision_recall_density_coverage(reals, fake, k=PRDC_K, device=device))
        references["prdc"] = f"{len(reals)} fixed training images vs {n} samples, k = {PRDC_K}"
    return out


@torch.no_grad()
def _reconstruction_metrics(
    model: GenerativeModel, images: Tensor, labels: Tensor | None = None
) -> dict[str, Any]:
    device = model.device
    pieces = []
    for start in range(0, len(images), 500):
        chunk = images[start : start + 500].to(device)
        if labels is None:
            pieces.append(model.reconstruct(chunk).float().cpu())
        else:
            pieces.append(
                model.reconstruct(chunk, labels=labels[start : start + 500].to(device)).float().cpu()
            )
    reconstructions = torch.cat(pieces).clamp(0.0, 1.0)
    return {
        "n": len(images),
        "mse": mse(reconstructions, images),
        "psnr": psnr(reconstructions, images),
        "ssim": ssim(reconstructions, images),
    }


@torch.no_grad()
def _likelihood_metrics(
    model: GenerativeModel, images: Tensor, k: int, seed: int, labels: Tensor | None = None
) -> dict[str, Any]:
    """Mean ELBO and K-sample importance-sampled NLL in nats per image and in bits per dimension."""
    device = model.device
    generator = torch.Generator().manual_seed(chunk_seed(seed, 1_000_003))
    elbos, nlls = [], []
    for start in range(0, len(images), 100):
        x = images[start : start + 100].to(device)
        given = {} if labels is None else {"labels": labels[start : start + 100].to(device)}
        elbos.append(model.elbo(x, generator=generator, **given).double().cpu())
        nlls.append(model.importance_sampled_nll(x, k=k, generator=generator, **given).double().cpu())
    elbo, nll = float(torch.cat(elbos).mean()), float(torch.cat(nlls).mean())
    dims = math.prod(images.shape[1:])
    return {
        "n": len(images),
        "k": k,
        "elbo_nats": elbo,
        "nll_nats": nll,
        "elbo_bits_per_dim": -elbo / (dims * math.log(2.0)),
        "nll_bits_per_dim": nll / (dims * math.log(2.0)),
        "likelihood": getattr(model.config, "likelihood", "unknown"),
    }


def _likelihood_note(model: GenerativeModel) -> str:
    kind = getattr(model.config, "likelihood", "")
    if kind == "bernoulli":
        return (
            "likelihood: Bernoulli decoder evaluated on continuous pixel intensities in [0, 1] (the usual "
            "'non-binarized MNIST' convention); not comparable with dequantized or binarized-MNIST NLLs"
        )
    return f"likelihood: {kind} decoder density on pixel intensities in [0, 1] (a density, not a probability)"


def quick_eval(
    model: GenerativeModel,
    dataset: str,
    n: int = 2000,
    seed: int = 0,
    log: Callable[[str], None] | None = None,
) -> dict[str, float]:
    """The trainer's periodic check: domain-classifier FID and class coverage of n samples."""
    train = load_dataset(dataset, "train")
    classifier = get_classifier(dataset, device=model.device, log=log)
    real = real_statistics(train, dataset, "train", classifier)
    samples = sample_images(model, n, seed)
    features, probs = classifier.features_and_probs(samples)
    mu, sigma = feature_statistics(features)
    coverage = class_coverage(probs, classifier.num_classes)
    return {
        "eval_fid": frechet_distance(real.mu, real.sigma, mu, sigma, method=_fid_method(classifier)),
        "eval_class_entropy": coverage["normalized_entropy"],
        "eval_rarest_share": coverage["rarest_share"],
    }
