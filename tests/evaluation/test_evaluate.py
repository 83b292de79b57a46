"""evaluate_run against independent computations: FID, caching, determinism, reports, families, hooks."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from genlab.config import TrainConfig
from genlab.data import load_dataset
from genlab.errors import ConfigError, DataError, GenlabError
from genlab.evaluation import evaluate_run, get_classifier, quick_eval, sample_images, write_report
from genlab.evaluation.real_stats import real_statistics, stats_path
from genlab.metrics.distribution import feature_statistics, fid, frechet_distance
from genlab.metrics.image_quality import mse
from genlab.models.base import GenerativeModel, ModelConfig
from genlab.runs import Run, load, resolve_config
from genlab.training.trainer import Trainer
from tests.conftest import TINY_MODEL_ARGS

N = 200  # samples per evaluation: enough for every metric, small enough to be quick


def public(result: dict) -> dict:
    return {k: v for k, v in result.items() if not k.startswith("_") and k != "timings"}


@pytest.fixture(scope="module")
def tiny_runs(tmp_path_factory) -> Path:
    """One tiny epoch of each family on mnist-5k (70 steps each)."""
    root = tmp_path_factory.mktemp("eval-runs")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # module fixtures run before the per-test thread setting
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("GENLAB_DATA", str(tmp_path_factory.mktemp("unused-data")))
        for name in ("gan", "vae", "ae"):
            config = resolve_config(
                overrides={
                    "model": name,
                    "epochs": 1,
                    "batch_size": 64,
                    "log_every": 20,
                    "grid_size": 4,
                    "model_args": dict(TINY_MODEL_ARGS[name]),
                }
            )
            Trainer(config, root / name).fit()
    torch.set_num_threads(threads)
    return root


# --- FID with the domain classifier -----------------------------------------------------------------------
def test_fid_of_real_test_split_is_small_and_noise_is_large():
    classifier = get_classifier("mnist-5k")
    train, test = load_dataset("mnist-5k", "train"), load_dataset("mnist-5k", "test")
    real = real_statistics(train, "mnist-5k", "train", classifier)
    assert real.from_cache and real.num_images == len(train)
    held_out = real_statistics(test, "mnist-5k", "test", classifier)
    real_fid = frechet_distance(real.mu, real.sigma, held_out.mu, held_out.sigma, method="eigh")
    noise = torch.rand(len(test), *test.image_shape, generator=torch.Generator().manual_seed(0))
    noise_features = classifier.features(noise)  # (500, 128)
    noise_fid = frechet_distance(real.mu, real.sigma, *feature_statistics(noise_features), method="eigh")
    assert real_fid < 10.0
    assert noise_fid > 100 * real_fid
    # the cached statistics are those of the features themselves, and FID is FID
    train_features = classifier.features(train.images.float() / 255)
    direct = fid(train_features, classifier.features(test.images.float() / 255))
    assert real_fid == pytest.approx(direct, rel=1e-4)
    assert noise_fid == pytest.approx(fid(train_features, noise_features), rel=1e-4)


# --- a full evaluation ----------------------------------------------------------------------------------
def test_vae_evaluation_matches_independent_computations(tiny_runs, tmp_path):
    run = load(tiny_runs / "vae")
    result = evaluate_run(run, n=N, nll_k=16, seed=3)
    m = result["metrics"]
    assert result["metrics_computed"] == [
        "fid",
        "kid",
        "prdc",
        "classifier_score",
        "class_coverage",
        "memorization",
        "likelihood",
        "reconstruction",
    ]
    classifier = get_classifier("mnist-5k")
    assert (
        result["extractor"]["sha256"] == classifier.hash
        and result["extractor"]["name"] == "domain-classifier"
    )

    # FID: the same samples, features and training split, computed from scratch
    samples = result["_images"]["samples"]
    assert torch.equal(samples, sample_images(run.model, N, seed=3))
    train = load_dataset("mnist-5k", "train")
    expected_fid = fid(
        classifier.features(train.images.float() / 255), classifier.features(samples), method="eigh"
    )
    assert m["fid"] == pytest.approx(expected_fid, rel=1e-5)
    assert m["fid"] > m["fid_real_test"] >= 0
    for key in ("precision", "recall", "density", "coverage"):
        assert 0.0 <= m[key] <= (math.inf if key == "density" else 1.0)
    assert 1.0 <= m["classifier_score"] <= 10.0
    assert sum(m["class_coverage"]["counts"]) == N

    # reconstruction of the first N test images
    test = load_dataset("mnist-5k", "test").images[:N].float() / 255
    rec = m["reconstruction"]
    assert rec["n"] == N
    assert rec["mse"] == pytest.approx(mse(run.reconstruct(test), test), rel=1e-6)
    assert rec["psnr"] > 0 and -1.0 <= rec["ssim"] <= 1.0

    # likelihood: the importance-sampled NLL is below the ELBO bound, bits/dim from nats
    lik = m["likelihood"]
    assert lik["nll_nats"] <= -lik["elbo_nats"]
    assert lik["nll_bits_per_dim"] == pytest.approx(lik["nll_nats"] / (784 * math.log(2)))
    assert any("non-binarized" in note for note in result["notes"])

    # the report files name the extractor and its hash
    written = write_report(result, tmp_path)
    names = {p.name for p in written}
    assert {"eval.json", "eval.md", "eval_samples.png", "eval_nearest.png", "eval_classes.png"} <= names
    saved = json.loads((tmp_path / "eval.json").read_text())
    assert saved["extractor"]["sha256"] == classifier.hash
    report = (tmp_path / "eval.md").read_text()
    assert classifier.hash in report and "domain-classifier" in report and "training images" in report


def test_repeated_eval_is_identical_and_uses_the_real_stats_cache(tiny_runs, offline_data_dir):
    run = load(tiny_runs / "gan")
    train = load_dataset("mnist-5k", "train")
    cached = stats_path(train, "mnist-5k", "train", get_classifier("mnist-5k"))
    before = cached.stat().st_mtime_ns
    first = evaluate_run(run, n=N, metrics=["fid", "kid", "prdc"], seed=1)
    second = evaluate_run(run, n=N, metrics=["fid", "kid", "prdc"], seed=1)
    assert public(first) == public(second)
    assert cached.is_file() and cached.with_suffix(".json").is_file()
    assert cached.stat().st_mtime_ns == before  # read, not rewritten
    other_seed = evaluate_run(run, n=N, metrics=["fid"], seed=2)
    assert other_seed["metrics"]["fid"] != first["metrics"]["fid"]


def test_real_stats_are_computed_once_then_read(offline_data_dir):
    test = load_dataset("mnist-5k", "test")
    classifier = get_classifier("mnist-5k")
    path = stats_path(test, "mnist-5k", "test", classifier)
    path.unlink()
    computed = real_statistics(test, "mnist-5k", "test", classifier)
    assert not computed.from_cache and path.is_file()
    again = real_statistics(test, "mnist-5k", "test", classifier)
    assert again.from_cache
    assert np.array_equal(again.mu, computed.mu) and torch.equal(again.features, computed.features)


def test_families_get_the_metrics_that_apply(tiny_runs):
    gan, ae = load(tiny_runs / "gan"), load(tiny_runs / "ae")
    ae_result = evaluate_run(ae, n=N, metrics=["reconstruction"])
    assert set(ae_result["metrics"]) == {"reconstruction"}
    assert "likelihood" not in evaluate_run(ae, n=N, metrics=None)["metrics_computed"]
    with pytest.raises(ConfigError, match="likelihood"):
        evaluate_run(gan, n=N, metrics=["likelihood"])
    with pytest.raises(ConfigError, match="reconstruction"):
        evaluate_run(gan, n=N, metrics=["reconstruction"])
    with pytest.raises(ConfigError, match="not class-conditional"):
        evaluate_run(gan, n=N, metrics=["label_accuracy"])
    with pytest.raises(ConfigError, match="unknown metric"):
        evaluate_run(gan, n=N, metrics=["fidd"])
    with pytest.raises(ConfigError, match="at least"):
        evaluate_run(gan, n=1)
    with pytest.raises(ConfigError, match="unknown extractor"):
        evaluate_run(gan, n=N, extractor="clip")


def test_inception_offline_without_weights_names_the_path(tiny_runs, offline_data_dir):
    with pytest.raises(GenlabError, match=str(offline_data_dir / "weights")):
        evaluate_run(load(tiny_runs / "gan"), n=N, extractor="inception")


def test_sampling_in_chunks_is_seeded_and_prefix_stable(tiny_runs):
    model = load(tiny_runs / "ae").model
    big = sample_images(model, 700, seed=5, chunk=300)
    assert torch.equal(big[:300], sample_images(model, 300, seed=5, chunk=300))
    assert torch.equal(big, sample_images(model, 700, seed=5, chunk=300))
    assert not torch.equal(big[:300], sample_images(model, 300, seed=6, chunk=300))


# --- memorization and the conditional hook, with a model that copies training images ----------------------
class CopyModel(GenerativeModel):
    """A 'generator' that returns random training images, of the requested class when given labels."""

    name = "copy"

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, conditional: bool = False):
        super().__init__(ModelConfig())
        self.register_buffer("images", images)
        self.register_buffer("labels", labels)
        self._conditional = conditional
        self.anchor = nn.Parameter(torch.zeros(1))  # gives the model a device

    @property
    def is_conditional(self) -> bool:
        return self._conditional

    @torch.no_grad()
    def sample(self, n, labels=None, generator=None):
        picks = torch.randint(0, len(self.images), (n,), generator=generator)
        if labels is not None:
            pools = [torch.nonzero(self.labels == c).flatten() for c in range(10)]
            picks = torch.stack([pools[int(c)][int(i) % len(pools[int(c)])] for c, i in zip(labels, picks)])
        return self.images[picks].float() / 255.0


def copy_run(tmp_path: Path, conditional: bool = False) -> Run:
    train = load_dataset("mnist-5k", "train")
    model = CopyModel(train.images, train.labels, conditional)
    return Run(tmp_path, TrainConfig(data="mnist-5k"), model, tmp_path / "step-0", {"step": 0})


def test_a_model_that_copies_training_images_is_flagged(tmp_path):
    result = evaluate_run(copy_run(tmp_path), n=N, metrics=["memorization", "fid"])
    memorization = result["metrics"]["memorization"]
    assert memorization["near_copy_share"] == 1.0
    assert all(pair["distance"] < 1e-5 for pair in memorization["closest_pairs"])  # float32 round-off
    assert result["metrics"]["fid"] < 50  # and its samples look just like the data


def test_label_accuracy_only_for_conditional_models(tmp_path):
    conditional = evaluate_run(copy_run(tmp_path, conditional=True), n=N, metrics=None)
    assert "label_accuracy" in conditional["metrics_computed"]
    assert conditional["metrics"]["label_accuracy"] > 0.8  # the classifier recognizes the requested digits
    plain = evaluate_run(copy_run(tmp_path), n=N, metrics=["class_coverage"])
    assert "label_accuracy" not in plain["metrics"]
    assert plain["metrics"]["class_coverage"]["num_classes_found"] == 10


# --- the classifier cache ---------------------------------------------------------------------------------
def test_classifier_cache_records_accuracy_and_hash(offline_data_dir):
    classifier = get_classifier("mnist-5k", train_if_missing=False)
    meta = json.loads((classifier.path / "meta.json").read_text())
    assert meta["test_accuracy"] > 0.85 and meta["dataset"] == "mnist-5k"
    assert get_classifier("mnist-5k").hash == classifier.hash == meta["sha256"]
    (classifier.path / "model.safetensors").write_bytes(b"broken")
    with pytest.raises(GenlabError, match="damaged"):
        get_classifier("mnist-5k")


def test_missing_classifier_without_training_is_a_clear_error(digits_npz):
    with pytest.raises(GenlabError, match="train-classifier --data"):
        get_classifier(str(digits_npz), train_if_missing=False)
    trained = get_classifier(str(digits_npz))  # 225 images: trains in about a second
    assert trained.meta["num_train"] == 225 and trained.num_classes == 10
    assert trained.path.name.startswith("digits10-")


def test_unlabeled_data_cannot_have_a_domain_classifier(tmp_path):
    path = tmp_path / "faces.npz"
    np.savez(path, images=np.zeros((20, 8, 8), dtype=np.uint8))
    with pytest.raises(DataError, match="--extractor inception"):
        get_classifier(str(path))


# --- periodic evaluation during training ------------------------------------------------------------------
def test_eval_every_logs_eval_records(tmp_path):
    config = resolve_config(
        overrides={
            "model": "ae",
            "epochs": 1,
            "log_every": 50,
            "grid_size": 4,
            "eval_every": 1,
            "eval_n": 100,
            "model_args": dict(TINY_MODEL_ARGS["ae"]),
        }
    )
    Trainer(config, tmp_path / "run").fit()
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in records if "eval_fid" in r]
    assert len(evals) == 1 and evals[0]["step"] == records[-2]["step"]
    assert evals[0]["eval_fid"] > 0 and 0 <= evals[0]["eval_class_entropy"] <= 1
    again = quick_eval(load(tmp_path / "run").model, "mnist-5k", n=100, seed=1234)
    assert again == pytest.approx({k: v for k, v in evals[0].items() if k.startswith("eval_")}, rel=1e-6)


def test_eval_every_needs_labels(tmp_path):
    path = tmp_path / "faces.npz"
    np.savez(path, images=np.zeros((20, 8, 8), dtype=np.uint8))
    config = resolve_config(overrides={"model": "ae", "data": str(path), "eval_every": 1})
    with pytest.raises(ConfigError, match="eval_every needs class labels"):
        Trainer(config, tmp_path / "run")
    with pytest.raises(ConfigError, match="eval_every must be >= 0"):
        resolve_config(overrides={"eval_every": -1})
