"""Minibatches drawn by index from a dataset that lives on the training device as one tensor.

MNIST-scale data fits on any GPU, so a DataLoader's worker processes, pinned memory and per-sample
collation only add overhead. The order of epoch e depends on (seed, e) alone, which makes resuming from a
checkpoint at (epoch, batch) replay exactly the batches an uninterrupted run would have drawn.
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


class DeviceBatches:
    """Whole dataset kept as one float tensor on the training device; batches drawn by index, no DataLoader."""

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor | None,
        batch_size: int,
        seed: int,
        drop_last: bool = True,
    ):
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

    def __len__(self) -> int:
        """Batches per epoch."""
        if self.drop_last:
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

    def _batches(self, epoch: int, start_batch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor | None]]:
        # Generated on CPU (same numbers on every device), moved once per epoch; slicing it is then free.
        order = self.permutation(epoch).to(self.images.device)  # (N,)
        bs = self.batch_size
        for b in range(start_batch, len(self)):
            idx = order[b * bs : (b + 1) * bs]  # (B,), B == bs except maybe the last batch
            yield self.images[idx], None if self.labels is None else self.labels[idx]
