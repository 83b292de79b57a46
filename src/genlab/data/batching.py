"""Minibatches drawn by index from a dataset that lives on the training device as one tensor.

MNIST-scale data fits on any GPU, so a DataLoader's worker processes, pinned memory and per-sample
collation only add overhead. The order of epoch e depends on (seed, e) alone, which makes resuming from a
checkpoint at (epoch, batch) replay exactly the batches an uninterrupted run would have drawn.

Two ways to draw: "shuffle" slices a permutation of the epoch into fixed-size batches; "poisson" (what the
DP-SGD accountant assumes) puts each example in batch b independently with probability batch_size / N,
so batch sizes vary and a batch can be empty. A Poisson batch is a pure function of (seed, epoch, b).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

import torch

from ..errors import DataError


def epoch_seed(seed: int, epoch: int) -> int:
    """A 63-bit seed for (seed, epoch); hashed so nearby pairs like (1, 0) and (0, 1) don't collide."""
    digest = hashlib.blake2b(f"genlab-batches:{seed}:{epoch}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << 63) - 1)


def poisson_seed(seed: int, epoch: int, batch: int) -> int:
    """A 63-bit seed for Poisson batch `batch` of `epoch`, independent of the permutation seeds."""
    digest = hashlib.blake2b(f"genlab-poisson:{seed}:{epoch}:{batch}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << 63) - 1)


SAMPLINGS = ("shuffle", "poisson")


class DeviceBatches:
    """Whole dataset kept as one float tensor on the training device; batches drawn by index, no DataLoader."""

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor | None,
        batch_size: int,
        seed: int,
        drop_last: bool = True,
        sampling: str = "shuffle",
        shard: tuple[int, int] = (0, 1),
    ):
        if sampling not in SAMPLINGS:
            raise DataError(f"sampling must be one of {', '.join(SAMPLINGS)}, got {sampling!r}")
        if images.ndim < 1 or len(images) == 0:
            raise DataError("cannot draw batches from an empty dataset")
        n = len(images)
        if labels is not None and len(labels) != n:
            raise DataError(f"{n} images but {len(labels)} labels")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise DataError(f"batch size must be a whole number >= 1, got {batch_size!r}")
        if drop_last and batch_size > n:
            raise DataError(
                f"batch size {batch_size} is larger than the dataset ({n} images): "
                "lower the batch size or use a larger dataset"
            )
        self.images = images  # (N, C, H, W) float, already on the training device
        self.labels = labels  # (N,) int64 on the same device, or None
        self.batch_size = batch_size
        self.seed = int(seed)
        self.drop_last = drop_last
        self.num_samples = n
        self.sampling = sampling
        # Data-parallel training: process `rank` of `world` takes positions rank::world of every batch, so
        # the shards of a step are disjoint and together are exactly the one-process batch.
        rank, world = shard
        if not 0 <= rank < world:
            raise DataError(f"shard rank {rank} is outside 0..{world - 1}")
        if world > 1 and (sampling != "shuffle" or not drop_last or batch_size % world):
            raise DataError(
                f"{world} processes split each batch evenly: the batch size ({batch_size}) must be a "
                f"multiple of {world}, with shuffle sampling and full batches"
            )
        self.shard = (rank, world)

    @property
    def sample_rate(self) -> float:
        """Probability that a given example is in a given Poisson batch (batch_size / N)."""
        return self.batch_size / self.num_samples

    def __len__(self) -> int:
        """Batches per epoch (Poisson: N // batch_size draws, so an epoch sees N examples on average)."""
        if self.drop_last or self.sampling == "poisson":
            return self.num_samples // self.batch_size
        return -(-self.num_samples // self.batch_size)

    def permutation(self, epoch: int) -> torch.Tensor:
        """The (N,) int64 sample order of `epoch`, on the CPU; a pure function of (seed, epoch)."""
        generator = torch.Generator(device="cpu").manual_seed(epoch_seed(self.seed, epoch))
        return torch.randperm(self.num_samples, generator=generator)

    def epoch(self, epoch: int, start_batch: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor | None]]:
        """Yield (images (B, C, H, W), labels (B,) or None) for batches start_batch..len(self)-1 of `epoch`."""
        if epoch < 0:
            raise DataError(f"epoch must be >= 0, got {epoch}")
        if not 0 <= start_batch <= len(self):
            raise DataError(f"start batch {start_batch} is outside this epoch's 0..{len(self)} batches")
        return self._batches(epoch, start_batch)

    def poisson_indices(self, epoch: int, batch: int) -> torch.Tensor:
        """The (B,) int64 indices of Poisson batch `batch` of `epoch`, on the CPU; B varies and may be 0."""
        generator = torch.Generator(device="cpu").manual_seed(poisson_seed(self.seed, epoch, batch))
        keep = torch.rand(self.num_samples, generator=generator) < self.sample_rate  # (N,)
        return keep.nonzero().squeeze(1)

    def _batches(self, epoch: int, start_batch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor | None]]:
        if self.sampling == "poisson":
            for b in range(start_batch, len(self)):
                idx = self.poisson_indices(epoch, b).to(self.images.device)  # (B,)
                yield self.images[idx], None if self.labels is None else self.labels[idx]
            return
        # Generated on CPU (same numbers on every device), moved once per epoch; slicing it is then free.
        order = self.permutation(epoch).to(self.images.device)  # (N,)
        bs = self.batch_size
        for b in range(start_batch, len(self)):
            idx = order[b * bs : (b + 1) * bs]  # (B,), B == bs except maybe the last batch
            if self.shard[1] > 1:
                idx = idx[self.shard[0] :: self.shard[1]]  # (B / world,): this process's share
            yield self.images[idx], None if self.labels is None else self.labels[idx]
