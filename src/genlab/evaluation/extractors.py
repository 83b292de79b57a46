"""Feature extractors for evaluation: a domain classifier per dataset, and the standard FID InceptionV3.

Numbers from two extractors are not comparable, so every extractor has a `name` and a `hash` (the SHA-256
of its weights file) that each report carries; nothing here ever falls back from one to the other.

The domain classifier (genlab.metrics.classifier) is trained by genlab on the dataset's training split,
scored on its test split and cached under `data_dir()/classifiers/<dataset>-<key>/`, where the key hashes
the training recipe and the training data: every run of one dataset is judged by the same weights.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor

from ..data import ImageDataset, data_dir, load_dataset
from ..errors import ConfigError, DataError, GenlabError
from ..metrics.classifier import ClassifierConfig, DomainClassifier, accuracy, extract, train_classifier

EXTRACTORS = ("classifier", "inception")
CLASSIFIER_FORMAT = 1


class FeatureExtractor(Protocol):
    """What the metrics need from an extractor: features of images in [0, 1], and who it is."""

    name: str  # e.g. "domain-classifier" or "inception-v3"
    hash: str  # SHA-256 of the weights file

    def features(self, images01: Tensor) -> Tensor:
        """(N, C, H, W) floats in [0, 1] -> (N, D) float32 on the CPU."""
        ...

    def describe(self) -> dict[str, Any]:
        """JSON-friendly identity for reports: name, hash, and whatever else tells it apart."""
        ...


@dataclass(frozen=True)
class ClassifierRecipe:
    """How genlab trains a domain classifier. Part of the cache key: a new recipe is a new classifier."""

    epochs: int = 4
    max_steps: int = 3000  # caps epochs on large datasets (60k MNIST: 3 epochs, ~3 CPU minutes)
    batch_size: int = 64
    lr: float = 2e-3
    seed: int = 0
    max_shift: int = 1
    channels: tuple[int, int] = (32, 64)
    feature_dim: int = 128

    def epochs_for(self, num_images: int) -> int:
        return max(1, min(self.epochs, self.max_steps * self.batch_size // max(num_images, 1)))


DEFAULT_RECIPE = ClassifierRecipe()


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def dataset_fingerprint(dataset: ImageDataset) -> str:
    """SHA-256 of a split's pixels and labels: a changed folder or .npz is a different dataset."""
    digest = hashlib.sha256(str(tuple(dataset.images.shape)).encode())
    digest.update(dataset.images.contiguous().numpy().tobytes())
    if dataset.labels is not None:
        digest.update(dataset.labels.contiguous().numpy().tobytes())
    return digest.hexdigest()


def dataset_slug(name: str) -> str:
    """A file-name-safe short name: 'mnist-5k' stays, '/data/my digits.npz' becomes 'my_digits'."""
    stem = Path(name).stem if ("/" in name or os.sep in name) else name
    return re.sub(r"[^A-Za-z0-9._-]+", "_", stem).strip("._") or "dataset"


# --- the domain classifier --------------------------------------------------------------------------------
class ClassifierExtractor:
    """A trained DomainClassifier: penultimate features for FID/KID/PRDC, softmax for class metrics."""

    name = "domain-classifier"

    def __init__(self, model: DomainClassifier, meta: dict[str, Any], path: Path):
        self.model, self.meta, self.path = model.eval(), meta, path
        self.hash: str = meta["sha256"]
        self.num_classes = model.config.num_classes

    def features_and_probs(self, images01: Tensor, batch_size: int = 500) -> tuple[Tensor, Tensor]:
        """Features (N, feature_dim) and class probabilities (N, num_classes), float32 on the CPU."""
        return extract(self.model, images01, batch_size=batch_size)

    def features(self, images01: Tensor) -> Tensor:
        return self.features_and_probs(images01)[0]

    def probs(self, images01: Tensor) -> Tensor:
        return self.features_and_probs(images01)[1]

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "sha256": self.hash,
            "dataset": self.meta["dataset"],
            "test_accuracy": self.meta["test_accuracy"],
            "feature_dim": self.model.config.feature_dim,
            "path": str(self.path),
        }


def _require_labels(dataset: ImageDataset, name: str) -> None:
    if dataset.labels is None or dataset.num_classes < 2:
        raise DataError(
            f"dataset {name} has no class labels (or a single class), so genlab cannot train a domain "
            "classifier for it: "
            "use --extractor inception (and skip the class metrics)"
        )


def classifier_key(dataset: ImageDataset, name: str, recipe: ClassifierRecipe) -> str:
    """Hash of everything that decides the classifier's weights: recipe, classes and training pixels."""
    identity = {
        "format": CLASSIFIER_FORMAT,
        "dataset": name,
        "recipe": dataclasses.asdict(recipe),
        "image_shape": list(dataset.image_shape),
        "num_classes": dataset.num_classes,
        "train_sha256": dataset_fingerprint(dataset),
    }
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()


def classifier_dir(name: str, key: str) -> Path:
    return data_dir() / "classifiers" / f"{dataset_slug(name)}-{key[:12]}"


def get_classifier(
    dataset: str,
    train_if_missing: bool = True,
    recipe: ClassifierRecipe | None = None,
    device: str | torch.device = "cpu",
    retrain: bool = False,
    log=None,
) -> ClassifierExtractor:
    """The cached domain classifier of `dataset`, trained (and scored on the test split) when missing.

    `log(text)` hears about a training that is about to start. A cached file whose SHA-256 no longer
    matches its meta.json is an error, never silently replaced.
    """
    recipe = recipe or DEFAULT_RECIPE
    train = load_dataset(dataset, "train")
    _require_labels(train, dataset)
    key = classifier_key(train, dataset, recipe)
    folder = classifier_dir(dataset, key)
    if retrain or not (folder / "meta.json").is_file():
        if not train_if_missing and not retrain:
            raise GenlabError(
                f"no domain classifier for {dataset} yet: train it with `genlab train-classifier --data {dataset}`"
            )
        if log is not None:
            log(f"training the domain classifier for {dataset} (once; cached in {folder})")
        _train_and_store(train, dataset, key, recipe, folder)
    return _load_classifier(folder, device)


def _train_and_store(
    train: ImageDataset, name: str, key: str, recipe: ClassifierRecipe, folder: Path
) -> None:
    config = ClassifierConfig(
        image_shape=train.image_shape,
        num_classes=train.num_classes,
        channels=recipe.channels,
        feature_dim=recipe.feature_dim,
    )
    epochs = recipe.epochs_for(len(train))
    try:
        model = train_classifier(
            train.images,
            train.labels,
            train.num_classes,
            epochs=epochs,
            batch_size=recipe.batch_size,
            lr=recipe.lr,
            seed=recipe.seed,
            max_shift=recipe.max_shift,
            config=config,
            num_threads=1,  # the net is tiny: one CPU thread is as fast, and robust on a busy machine
        )
    except ValueError as exc:  # e.g. images smaller than 4x4
        raise DataError(f"cannot train a domain classifier for {name}: {exc}") from exc
    test = load_dataset(name, "test")
    test_accuracy = accuracy(model, test.images, test.labels) if test.labels is not None else math.nan
    folder.parent.mkdir(parents=True, exist_ok=True)
    temp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        weights = temp / "model.safetensors"
        save_file({k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}, str(weights))
        meta = {
            "format": CLASSIFIER_FORMAT,
            "dataset": name,
            "key": key,
            "sha256": sha256_file(weights),
            "test_accuracy": test_accuracy,
            "num_train": len(train),
            "num_test": len(test),
            "epochs": epochs,
            "recipe": dataclasses.asdict(recipe),
            "config": config.to_dict(),
            "class_names": train.class_names,
        }
        (temp / "meta.json").write_text(json.dumps(meta, indent=2))
        _replace_dir(temp, folder)
    finally:
        shutil.rmtree(temp, ignore_errors=True)


def _replace_dir(new: Path, target: Path) -> None:
    """Move `new` into place as `target` with renames only, so readers never see a half-written folder."""
    if target.exists():
        old = target.with_name(f".{target.name}.old-{os.getpid()}")
        os.replace(target, old)
        os.replace(new, target)
        shutil.rmtree(old, ignore_errors=True)
    else:
        try:
            os.replace(new, target)
        except OSError:  # another process finished the same classifier first: keep theirs
            if not (target / "meta.json").is_file():
                raise


def _load_classifier(folder: Path, device: str | torch.device) -> ClassifierExtractor:
    weights = folder / "model.safetensors"
    broken = f"the cached domain classifier in {folder} is damaged"
    try:
        meta = json.loads((folder / "meta.json").read_text())
        digest = sha256_file(weights)
    except (OSError, json.JSONDecodeError) as exc:
        raise GenlabError(f"{broken} ({exc}): delete the folder to retrain it") from exc
    if digest != meta.get("sha256"):
        raise GenlabError(
            f"{broken} (weights hash {digest[:12]} != {str(meta.get('sha256'))[:12]}): delete it"
        )
    try:
        model = DomainClassifier(ClassifierConfig.from_dict(meta["config"]))
        model.load_state_dict(load_file(str(weights)))
    except (SafetensorError, RuntimeError, KeyError) as exc:
        raise GenlabError(f"{broken} ({type(exc).__name__}): delete the folder to retrain it") from exc
    return ClassifierExtractor(model.to(device), meta, folder)


# --- InceptionV3 ------------------------------------------------------------------------------------------
class InceptionExtractor:
    """The pytorch-fid InceptionV3 (pt_inception-2015-12-05): 2048-d pool features, as papers report."""

    name = "inception-v3"

    def __init__(self, model, batch_size: int = 50):
        self.model, self.batch_size = model, batch_size
        self.hash: str = model.weights_sha256

    @torch.no_grad()
    def features(self, images01: Tensor) -> Tensor:
        device = next(self.model.parameters()).device
        chunks = [
            self.model(images01[start : start + self.batch_size].to(device).clamp(0, 1)).float().cpu()
            for start in range(0, images01.shape[0], self.batch_size)
        ]
        return torch.cat(chunks) if chunks else torch.empty(0, 2048)

    def describe(self) -> dict[str, Any]:
        from ..metrics.inception import INCEPTION_FILENAME

        return {"name": self.name, "sha256": self.hash, "weights": INCEPTION_FILENAME, "feature_dim": 2048}


def get_extractor(
    kind: str, dataset: str, device: str | torch.device = "cpu", log=None
) -> ClassifierExtractor | InceptionExtractor:
    """'classifier' (the dataset's domain classifier, trained on first use) or 'inception'."""
    if kind == "classifier":
        return get_classifier(dataset, device=device, log=log)
    if kind == "inception":
        from ..metrics.inception import load_inception

        return InceptionExtractor(load_inception().to(device))
    raise ConfigError(f"unknown extractor {kind!r}; choose one of: {', '.join(EXTRACTORS)}")
