"""Data-parallel training across processes (torchrun), on PyTorch's own process groups.

`torchrun --nproc_per_node=N -m genlab train ...` starts N copies of genlab with RANK, WORLD_SIZE,
LOCAL_RANK and MASTER_ADDR/PORT in their environment; `setup()` turns that into a `Distributed` context
(NCCL on cuda:LOCAL_RANK, gloo on CPU). Outside torchrun, or with one process, it returns the
single-process context, whose methods cost nothing, so the trainer calls them unconditionally.

Why a manual all-reduce of the gradients instead of wrapping the model in DistributedDataParallel: the
trainer calls `model.training_step(batch, name)` once per optimizer (a GAN's D then G step), each a
separate backward over a different subset of parameters, and not through `forward`. DDP hooks into
`forward` and expects one backward per forward over a fixed set of parameters (else
find_unused_parameters / static-graph workarounds). Averaging each optimizer's gradients after its
backward, flattened into one buffer per dtype (one collective per optimizer step), is exact for any
number of optimizers and submodules and keeps models unaware of processes. What it gives up is DDP's
overlap of communication with backward, which is small for models of this size (a few million weights).

Control decisions (stop now? past the time limit?) go over a gloo group on the CPU, so they never
force a GPU sync; data (gradients, losses, BatchNorm statistics) goes over the main group.
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import os
from collections.abc import Iterator, Sequence
from datetime import timedelta

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

from ..errors import ConfigError, TrainingError

TIMEOUT_ENV = "GENLAB_DIST_TIMEOUT"  # seconds a collective may wait for the other ranks
DEFAULT_TIMEOUT_SECONDS = 600.0  # rank 0's epoch-end work (grids, checkpoint, quick eval) must fit in it

_owned_group = False  # whether genlab created the default process group (and so must destroy it)
_control_group = None  # the gloo group for votes when the data goes over NCCL
_local_only = False  # set while rank 0 alone runs the model (epoch-end sampling): no collectives then


def step_seed(seed: int, step: int, rank: int) -> int:
    """A 63-bit seed for the random draws (noise, latent codes) of `rank` at `step` under DDP."""
    digest = hashlib.blake2b(f"genlab-ddp:{seed}:{step}:{rank}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << 63) - 1)


class Distributed:
    """Rank, world size, device and the collectives the trainer needs; world_size 1 = no processes."""

    def __init__(
        self,
        rank: int = 0,
        world_size: int = 1,
        local_rank: int = 0,
        device: torch.device | None = None,
        control_group=None,
    ):
        self.rank, self.world_size, self.local_rank = rank, world_size, local_rank
        self.device = device
        self._control = control_group  # gloo group for CPU-side votes and barriers

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0 alone writes files: checkpoints, grids, metrics, plots, provenance."""
        return self.rank == 0

    def describe(self) -> str:
        return f"rank {self.rank} of {self.world_size}"

    def seed_step(self, seed: int, step: int) -> None:
        """Seed this process's random draws (noise, latent codes) for `step`: distinct per rank, and a pure
        function of (seed, step, rank), so a resumed run draws what an unbroken one would. One process keeps
        its single stream, saved in checkpoints, as before."""
        if not self.enabled:
            return
        value = step_seed(seed, step, self.rank)
        torch.default_generator.manual_seed(value)
        if self.device is not None and self.device.type == "cuda":
            torch.cuda.manual_seed(value)  # this process's GPU only

    # --- collectives (all no-ops with one process) --------------------------------------------------
    def average_gradients(self, parameters: Sequence[Tensor]) -> None:
        """Replace each gradient by its mean over the ranks: the gradient of the global batch's mean loss,
        as one process would compute it (each rank's loss is a mean over its equal share)."""
        if not self.enabled:
            return
        grads = [p.grad for p in parameters if p.grad is not None]  # None on every rank alike
        for group in _by_dtype_and_device(grads):
            flat = torch.cat([g.reshape(-1) for g in group])
            with self._collective("gradient all-reduce"):
                dist.all_reduce(flat)
            flat.div_(self.world_size)
            offset = 0
            for grad in group:
                grad.copy_(flat[offset : offset + grad.numel()].view_as(grad))
                offset += grad.numel()

    def mean(self, values: Tensor) -> Tensor:
        """The element-wise mean over ranks of a float tensor (a NaN on any rank stays NaN)."""
        if not self.enabled:
            return values
        values = values.float().clone()
        with self._collective("metrics all-reduce"):
            dist.all_reduce(values)
        return values / self.world_size

    def any_of(self, *flags: bool) -> tuple[bool, ...]:
        """Whether any rank raised each flag; every rank gets the same answer, so all stop together."""
        if not self.enabled:
            return tuple(bool(f) for f in flags)
        votes = torch.tensor([float(f) for f in flags])
        with self._collective("stop vote"):
            dist.all_reduce(votes, op=dist.ReduceOp.MAX, group=self._control)
        return tuple(bool(v > 0) for v in votes)

    def barrier(self, what: str = "barrier") -> None:
        if self.enabled:
            with self._collective(what):
                dist.barrier(group=self._control)

    def broadcast_module(self, module: nn.Module) -> None:
        """Copy rank 0's weights and buffers to every rank (a guard: all ranks build them alike)."""
        if not self.enabled:
            return
        with self._collective("weight broadcast"), torch.no_grad():
            for tensor in list(module.parameters()) + list(module.buffers()):
                dist.broadcast(tensor.data, src=0)

    def broadcast_buffers(self, module: nn.Module) -> None:
        """Copy rank 0's buffers to every rank: what rank 0 alone changed at the end of an epoch (the
        autoencoder's fitted sampler), so the replicas stay identical."""
        if self.enabled:
            with self._collective("buffer broadcast"), torch.no_grad():
                for tensor in module.buffers():
                    dist.broadcast(tensor.data, src=0)

    @contextlib.contextmanager
    def _collective(self, what: str) -> Iterator[None]:
        try:
            yield
        except (RuntimeError, dist.DistError) as exc:  # a peer died, hung past the timeout, or left
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise TrainingError(
                f"{self.describe()}: {what} failed ({first[:200]}): another rank failed or stopped "
                f"responding; see its error above (timeout: ${TIMEOUT_ENV}, now {_timeout().total_seconds():g}s)"
            ) from exc


def _by_dtype_and_device(tensors: list[Tensor]) -> list[list[Tensor]]:
    groups: dict[tuple, list[Tensor]] = {}
    for tensor in tensors:
        groups.setdefault((tensor.dtype, tensor.device), []).append(tensor)
    return list(groups.values())


def _timeout() -> timedelta:
    text = os.environ.get(TIMEOUT_ENV, "")
    try:
        seconds = float(text) if text else DEFAULT_TIMEOUT_SECONDS
    except ValueError:
        seconds = -1.0
    if not seconds > 0:
        raise ConfigError(f"${TIMEOUT_ENV} must be a number of seconds > 0, got {text!r}")
    return timedelta(seconds=seconds)


def _env_int(name: str) -> int:
    text = os.environ.get(name, "")
    try:
        return int(text)
    except ValueError:
        raise ConfigError(
            f"${name}={text!r} is not a whole number: launch with torchrun, which sets it"
        ) from None


def launched_by_torchrun() -> bool:
    return "WORLD_SIZE" in os.environ and "RANK" in os.environ


def setup(device: torch.device) -> Distributed:
    """The process's place in the job. `device` is what --device resolved to; under torchrun its index
    becomes LOCAL_RANK (one GPU per process). Joins (or creates) the default process group."""
    if not launched_by_torchrun() or _env_int("WORLD_SIZE") <= 1:
        return Distributed(device=device)
    rank, world_size = _env_int("RANK"), _env_int("WORLD_SIZE")
    local_rank = _env_int("LOCAL_RANK") if "LOCAL_RANK" in os.environ else 0
    if device.type == "cuda":
        if device.index is not None and device.index != local_rank:
            raise ConfigError(
                f"under torchrun each process uses cuda:LOCAL_RANK; got --device {device}: pass --device cuda"
            )
        if local_rank >= torch.cuda.device_count():
            raise ConfigError(
                f"LOCAL_RANK {local_rank} but only {torch.cuda.device_count()} GPU(s) here: "
                "lower --nproc_per_node to the GPUs per node"
            )
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
        backend = "nccl"
    elif device.type == "cpu":
        backend = "gloo"
    else:
        raise ConfigError(f"multi-process training runs on cuda (NCCL) or cpu (gloo), not {device.type}")
    global _owned_group
    timeout = _timeout()
    if not dist.is_initialized():
        try:
            dist.init_process_group(backend, timeout=timeout, rank=rank, world_size=world_size)
        except (RuntimeError, ValueError, dist.DistError) as exc:
            raise TrainingError(
                f"rank {rank} of {world_size}: could not join the process group ({str(exc).splitlines()[0]}); "
                "check MASTER_ADDR/MASTER_PORT or --rdzv_endpoint"
            ) from exc
        _owned_group = True
        atexit.register(shutdown)  # also on an exception: peers then see the connection close at once
    global _control_group
    if backend != "gloo" and _control_group is None:  # made once: every rank must join each new group
        _control_group = dist.new_group(backend="gloo", timeout=timeout)
    return Distributed(rank, world_size, local_rank, device, _control_group if backend != "gloo" else None)


def shutdown() -> None:
    """Destroy the process group genlab created (idempotent); a no-op otherwise."""
    global _owned_group, _control_group
    if _owned_group and dist.is_initialized():
        dist.destroy_process_group()  # all groups, the control group too
    _owned_group, _control_group = False, None


# --- BatchNorm over the global batch ----------------------------------------------------------------
@contextlib.contextmanager
def local_only() -> Iterator[None]:
    """Run the model on this rank alone (rank 0's epoch-end sampling): SyncBatchNorm does not sync."""
    global _local_only
    previous, _local_only = _local_only, True
    try:
        yield
    finally:
        _local_only = previous


class _SumOverRanks(torch.autograd.Function):
    """y = sum over ranks of x; each rank's x feeds every rank's loss, so dL/dx = sum over ranks of dL/dy."""

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:
        total = x.clone()
        dist.all_reduce(total)
        return total

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        total = grad.clone()
        dist.all_reduce(total)
        return total


class SyncBatchNorm(_BatchNorm):
    """BatchNorm whose training statistics are those of the global batch across all ranks, so a run on N
    processes normalizes as one process would; in eval mode (or one process) it is plain BatchNorm.

    torch.nn.SyncBatchNorm refuses CPU tensors, and the gloo tests run on CPU; this one works on any
    backend: the per-channel sum, then the sum of squared deviations from the global mean (two-pass, as
    exact as the one-process variance), are summed over ranks by a differentiable all-reduce, so
    gradients flow through the global statistics exactly as through one process's."""

    def _check_input_dim(self, input: Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected at least 2D input (N, C, ...), got {input.dim()}D")

    def forward(self, input: Tensor) -> Tensor:
        sync = self.training and not _local_only and dist.is_initialized() and dist.get_world_size() > 1
        if not sync:
            return super().forward(input)
        self._check_input_dim(input)
        dims = [0, *range(2, input.dim())]
        shape = [1, -1] + [1] * (input.dim() - 2)
        count = input.numel() // input.shape[1] * dist.get_world_size()  # equal shares on every rank
        mean = _SumOverRanks.apply(input.sum(dims)) / count  # (C,)
        centered = input - mean.view(shape)
        var = _SumOverRanks.apply(centered.pow(2).sum(dims)) / count  # biased, as BatchNorm normalizes
        output = centered * torch.rsqrt(var.view(shape) + self.eps)
        if self.affine:
            output = output * self.weight.view(shape) + self.bias.view(shape)
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                momentum = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
                unbiased = var * (count / max(count - 1, 1))
                self.running_mean.lerp_(mean.detach(), momentum)
                self.running_var.lerp_(unbiased.detach(), momentum)
        return output


def convert_sync_batchnorm(module: nn.Module) -> nn.Module:
    """Swap every BatchNorm1d/2d/3d in `module` for SyncBatchNorm, keeping its parameters, buffers and
    state-dict names (checkpoints load either way). Returns the module (replaced if it is a BatchNorm)."""
    if isinstance(module, _BatchNorm) and not isinstance(module, SyncBatchNorm):
        sync = SyncBatchNorm(
            module.num_features, module.eps, module.momentum, module.affine, module.track_running_stats
        )
        if module.affine:
            sync.weight, sync.bias = module.weight, module.bias
        if module.track_running_stats:
            sync.running_mean, sync.running_var = module.running_mean, module.running_var
            sync.num_batches_tracked = module.num_batches_tracked
        sync.train(module.training)
        return sync
    for name, child in module.named_children():
        replaced = convert_sync_batchnorm(child)
        if replaced is not child:
            setattr(module, name, replaced)
    return module
