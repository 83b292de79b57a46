"""DeviceBatches: complete epochs, exact resumption, and an order that depends on (seed, epoch) only."""

from __future__ import annotations

import pytest
import torch

from genlab.data import DeviceBatches
from genlab.errors import DataError


def _data(n: int = 10) -> tuple[torch.Tensor, torch.Tensor]:
    images = (
        torch.arange(n, dtype=torch.float32).reshape(n, 1, 1, 1).expand(n, 1, 2, 2).clone()
    )  # (N, 1, 2, 2)
    return images, torch.arange(n)


def _order(batches: DeviceBatches, epoch: int, start: int = 0) -> list[list[int]]:
    return [labels.tolist() for _, labels in batches.epoch(epoch, start)]


def test_every_index_once_without_drop_last() -> None:
    batches = DeviceBatches(*_data(10), batch_size=3, seed=0, drop_last=False)
    assert len(batches) == 4
    seen = []
    for images, labels in batches.epoch(0):
        assert images.shape[1:] == (1, 2, 2) and images.dtype == torch.float32
        assert images[:, 0, 0, 0].long().tolist() == labels.tolist()  # labels travel with their images
        seen += labels.tolist()
    assert sorted(seen) == list(range(10))
    assert [len(b) for b in _order(batches, 0)] == [3, 3, 3, 1]


def test_drop_last_gives_full_batches() -> None:
    batches = DeviceBatches(*_data(10), batch_size=3, seed=0)
    order = _order(batches, 0)
    assert len(batches) == 3 and [len(b) for b in order] == [3, 3, 3]
    assert len(set(sum(order, []))) == 9


def test_resume_yields_the_remaining_batches() -> None:
    batches = DeviceBatches(*_data(50), batch_size=4, seed=7)
    full = _order(batches, 3)
    for start in (0, 1, 5, len(batches) - 1, len(batches)):
        resumed = DeviceBatches(*_data(50), batch_size=4, seed=7)  # a fresh process after a restart
        assert _order(resumed, 3, start) == full[start:]


def test_order_is_a_function_of_seed_and_epoch() -> None:
    a = DeviceBatches(*_data(100), batch_size=10, seed=1)
    b = DeviceBatches(*_data(100), batch_size=10, seed=1)
    torch.manual_seed(123)  # global RNG state must not matter
    assert _order(a, 2) == _order(b, 2)
    assert _order(a, 0) != _order(a, 1)
    assert _order(a, 0) != _order(DeviceBatches(*_data(100), batch_size=10, seed=2), 0)
    assert _order(DeviceBatches(*_data(100), batch_size=10, seed=0), 1) != _order(
        DeviceBatches(*_data(100), batch_size=10, seed=1), 0
    )


def test_unlabeled() -> None:
    images, _ = _data(6)
    out = list(DeviceBatches(images, None, batch_size=2, seed=0).epoch(0))
    assert len(out) == 3 and all(labels is None for _, labels in out)


def test_batch_size_checks() -> None:
    images, labels = _data(5)
    with pytest.raises(DataError, match="batch size 8 is larger than the dataset \\(5 images\\)"):
        DeviceBatches(images, labels, batch_size=8, seed=0)
    small = DeviceBatches(images, labels, batch_size=8, seed=0, drop_last=False)
    assert len(small) == 1 and sorted(_order(small, 0)[0]) == list(range(5))
    for bad in (0, -1, 2.5, True):
        with pytest.raises(DataError, match="batch size must be"):
            DeviceBatches(images, labels, batch_size=bad, seed=0)


def test_argument_checks() -> None:
    images, labels = _data(5)
    with pytest.raises(DataError, match="5 images but 4 labels"):
        DeviceBatches(images, labels[:4], batch_size=2, seed=0)
    with pytest.raises(DataError, match="empty"):
        DeviceBatches(images[:0], None, batch_size=2, seed=0)
    batches = DeviceBatches(images, labels, batch_size=2, seed=0)
    with pytest.raises(DataError, match="start batch 3"):
        batches.epoch(0, start_batch=3)
    with pytest.raises(DataError, match="epoch must be"):
        batches.epoch(-1)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_same_batches_on_cuda() -> None:
    images, labels = _data(64)
    cpu = DeviceBatches(images, labels, batch_size=8, seed=3)
    gpu = DeviceBatches(images.cuda(), labels.cuda(), batch_size=8, seed=3)
    for (xc, yc), (xg, yg) in zip(cpu.epoch(1), gpu.epoch(1), strict=True):
        assert xg.is_cuda and yg.is_cuda and xc.equal(xg.cpu()) and yc.equal(yg.cpu())


def test_poisson_batches_are_a_pure_function_of_seed_epoch_and_step() -> None:
    batches = DeviceBatches(*_data(200), batch_size=20, seed=3, sampling="poisson")
    assert len(batches) == 10 and batches.sample_rate == pytest.approx(0.1)
    first = _order(batches, 1)
    assert first == _order(DeviceBatches(*_data(200), batch_size=20, seed=3, sampling="poisson"), 1)
    assert _order(batches, 1, start=4) == first[4:]  # resuming mid-epoch draws the same batches
    assert first != _order(batches, 2)
    sizes = [len(b) for b in first]
    assert len(set(sizes)) > 1  # variable batch sizes
    assert all(len(set(b)) == len(b) for b in first)  # an example at most once per batch


def test_poisson_batch_sizes_follow_the_sampling_rate_and_can_be_empty() -> None:
    batches = DeviceBatches(*_data(100), batch_size=10, seed=0, sampling="poisson")
    sizes = torch.tensor([len(batches.poisson_indices(e, b)) for e in range(40) for b in range(10)]).double()
    assert sizes.mean() == pytest.approx(10.0, abs=0.5)  # Binomial(100, 0.1): mean 10, sd of mean 0.15
    assert sizes.var() == pytest.approx(9.0, rel=0.25)  # variance N q (1 - q) = 9
    tiny = DeviceBatches(*_data(100), batch_size=1, seed=0, sampling="poisson")
    empties = [images for e in range(3) for images, _ in tiny.epoch(e) if len(images) == 0]
    assert empties and empties[0].shape == (0, 1, 2, 2)  # (1 - 0.01)^100 = 37% of batches are empty


def test_unknown_sampling_is_a_data_error() -> None:
    with pytest.raises(DataError, match="sampling"):
        DeviceBatches(*_data(10), batch_size=2, seed=0, sampling="uniform")
