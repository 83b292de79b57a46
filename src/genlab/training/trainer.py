"""The one training loop for every family.

Per step it calls `model.training_step(batch, name)` once per optimizer, in order, and does backward,
clipping and the optimizer step itself; it never branches on the model family. Around that: seeds,
device-resident batches, EMA, a deferred NaN/inf guard, progress, metrics.jsonl, fixed-noise sample
grids and loss curves each epoch, atomic checkpoints, exact resume, and Ctrl-C that saves and stops.
Under torchrun it trains data-parallel (training/distributed.py): each process takes its share of every
batch, gradients are averaged after each backward, and rank 0 alone writes files.
"""

from __future__ import annotations

import dataclasses
import json
import math
import signal
import threading
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import torch
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from .. import provenance, viz
from ..config import TrainConfig
from ..constraints import check_device_name
from ..data import DeviceBatches, ImageDataset, load_dataset
from ..errors import ConfigError, TrainingError
from ..models.base import Batch, GenerativeModel
from ..runs import build_model, model_config_values, read_run_config
from . import distributed
from .checkpoint import (
    CONFIG_FILE,
    TrainingState,
    latest_checkpoint,
    load_checkpoint,
    save_checkpoint,
    write_json_atomic,
)
from .ema import EMA
from .metrics_log import METRICS_FILE, keep_up_to, read_records
from .run_lock import RunLock, has_checkpoint, prepare_run_dir
from .speed import autocast, compile_networks, fast_optimizers

GRID_SEED = 1234  # fixed noise for the per-epoch grids, so epochs are comparable
PLOT_EVERY_SECONDS = (
    30.0  # matplotlib costs ~0.3 s a plot: redraw the curves at most this often, and at the end
)


def resolve_device(name: str = "auto") -> torch.device:
    """auto picks cuda, then mps, then cpu; an explicit device that is absent is a clear error."""
    check_device_name(name)  # 'xyz' or 'cuda:abc': a ConfigError, not torch's RuntimeError
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {name!r} requested but CUDA is not available; use --device cpu")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"device {name!r} requested but MPS is not available; use --device cpu")
    return device


@dataclass
class TrainResult:
    run_dir: Path
    steps: int
    epochs_done: int
    seconds: float
    interrupted: bool
    last_record: dict


class Trainer:
    def __init__(
        self,
        config: TrainConfig,
        run_dir: str | Path,
        resume: bool = False,
        console: Console | None = None,
        dataset: ImageDataset | None = None,
        overwrite: bool = False,
    ):
        config.validate()
        self.config, self.run_dir, self.resume = config, Path(run_dir), resume
        self.console = console or Console(stderr=True)
        self.dist = distributed.setup(resolve_device(config.device))  # one process outside torchrun
        self.device = self.dist.device
        if self.dist.enabled:
            self._check_distributed()
        self._stop_requested = False
        self._step_hooks: list = []
        self._last_plot = time.perf_counter()
        self._lock = RunLock(self.run_dir)
        try:
            self._set_up(dataset, overwrite)
        except BaseException:
            self._lock.release()
            raise

    def _set_up(self, dataset: ImageDataset | None, overwrite: bool) -> None:
        config, resume = self.config, self.resume
        # locked before anything is read or written; a run with no checkpoint yet (killed in its first
        # epoch) is resumed by starting it over
        if self.dist.is_main:  # under torchrun rank 0 alone creates, locks and clears the folder
            self._has_checkpoint = prepare_run_dir(self.run_dir, resume, overwrite, self._lock, self.console)
        self.dist.barrier("run-directory check")  # the other ranks read the run only once it is ready
        if not self.dist.is_main:
            self._has_checkpoint = has_checkpoint(self.run_dir)
        self.dataset = dataset if dataset is not None else load_dataset(config.data, "train")
        if config.eval_every and (self.dataset.labels is None or self.dataset.num_classes < 2):
            raise ConfigError(
                "eval_every needs class labels (it scores samples with the dataset's domain classifier); "
                f"{config.data} has none: run `genlab eval --extractor inception` after training instead"
            )
        torch.manual_seed(config.seed)
        if resume:  # the run's own saved model config, exactly
            model_values = read_run_config(self.run_dir)[1]
        else:
            model_values = model_config_values(config, self.dataset.image_shape, self.dataset.num_classes)
        self.model = build_model(config.model, model_values).to(self.device)
        if self.dist.enabled:  # before the optimizers: BatchNorm statistics over the global batch
            distributed.convert_sync_batchnorm(self.model)
        private = config.dp_epsilon > 0
        if private:  # before the optimizers and the EMA copy: it may swap layers
            from .privacy import make_per_sample_compatible

            make_per_sample_compatible(self.model, log=lambda text: self.console.print(text, soft_wrap=True))
        self.optimizers = self.model.optimizers()
        if not private:  # Opacus wraps the optimizers it is given: leave them as the model made them
            self.optimizers = fast_optimizers(self.optimizers)
        self.ema = EMA(self.model, config.ema_decay) if config.ema_decay > 0 else None
        if config.compile:  # after the EMA copy, which stays eager (it only samples)
            if private:
                raise ConfigError("--compile cannot be combined with DP-SGD (Opacus hooks); drop one")
            compile_networks(self.model, self.device)
        self.images = self.model.from_uint8(self.dataset.images).to(self.device)  # (N, C, H, W), whole set
        self.labels = self.dataset.labels.to(self.device) if self.dataset.labels is not None else None
        self.batches = DeviceBatches(
            self.images,
            self.labels,
            config.batch_size,
            seed=config.seed,
            sampling="poisson" if private else "shuffle",  # what the DP accountant assumes
            shard=(self.dist.rank, self.dist.world_size),
        )
        self.privacy = self._private_training() if private else None
        # the learning rates the schedule scales, taken before a checkpoint's (already scaled) ones load
        self._base_lrs = {name: [g["lr"] for g in opt.param_groups] for name, opt in self.optimizers.items()}
        self.state = TrainingState()
        if resume and not self._has_checkpoint:
            if self.dist.is_main:
                self._truncate_metrics(0)
        elif resume:
            self.state = load_checkpoint(
                latest_checkpoint(self.run_dir),
                self.model,
                self.optimizers,
                self.ema.model if self.ema else None,
            )
            if self.privacy:
                from .privacy import restore

                restore(self.privacy, self.state.extra)
            if self.dist.is_main:
                self._truncate_metrics(self.state.step)
        elif self.dist.is_main:
            self._write_run_config()
        self.dist.broadcast_module(self.model)  # a guard: every rank built or loaded the same weights
        if self.privacy:
            self._announce_privacy()

    # --- set-up ------------------------------------------------------------------------------------
    def _check_distributed(self) -> None:
        config, world = self.config, self.dist.world_size
        if config.dp_epsilon > 0:
            raise ConfigError(
                "differential privacy (--dp-epsilon) runs in one process; launch without torchrun"
            )
        if config.batch_size % world:
            raise ConfigError(
                f"--batch-size is the global batch, split evenly over the {world} processes: "
                f"{config.batch_size} is not a multiple of {world}"
            )
        if not self.dist.is_main:  # one voice: rank 0 prints progress; errors still surface on every rank
            self.console = Console(stderr=True, quiet=True)

    def _private_training(self):
        """DP-SGD on the model's private parts; their optimizers are replaced by Opacus DP optimizers."""
        from .privacy import PrivateTraining

        config = self.config
        private = PrivateTraining(
            self.model,
            self.optimizers,
            epsilon=config.dp_epsilon,
            delta=config.dp_delta or 1.0 / len(self.images),
            max_grad_norm=config.dp_max_grad_norm,
            sample_rate=self.batches.sample_rate,
            expected_batch_size=config.batch_size,
            planned_steps=self.planned_steps,
        )
        self.optimizers = private.optimizers
        return private

    def _announce_privacy(self) -> None:
        private, config = self.privacy, self.config
        for note in private.notes:
            self.console.print(f"DP: note: {note}", highlight=False, soft_wrap=True)
        self.console.print(
            f"DP-SGD: epsilon {config.dp_epsilon:g} at delta {private.delta:.3g} over "
            f"{private.planned_steps} private steps: noise multiplier {private.noise_multiplier:.3f}, "
            f"per-example clip {config.dp_max_grad_norm:g}, Poisson batches (q = {private.sample_rate:.4f}); "
            f"private: {', '.join(private.hooks)}; spent so far: {private.epsilon():.3f}",
            highlight=False,
            soft_wrap=True,
        )

    def _write_run_config(self) -> None:
        write_json_atomic(
            self.run_dir / CONFIG_FILE,
            {
                "genlab_format": 1,
                "model": self.config.model,
                "model_config": dataclasses.asdict(self.model.config),
                "train": self.config.to_dict(),
                "data": {
                    "name": self.dataset.name,
                    "size": len(self.dataset),
                    "image_shape": list(self.dataset.image_shape),
                    "class_names": self.dataset.class_names,
                },
            },
        )

    def _truncate_metrics(self, step: int) -> None:
        """Drop records logged after the checkpoint we resume from, so the log matches an unbroken run
        (a new file renamed into place: a kill meanwhile keeps the old history)."""
        damaged = keep_up_to(self.run_dir / METRICS_FILE, step)
        if damaged:
            self.console.print(f"note: dropped {damaged} damaged line(s) of {self.run_dir / METRICS_FILE}")

    # --- control -----------------------------------------------------------------------------------
    def request_stop(self) -> None:
        """Stop at the next step boundary, save a checkpoint there and return (what Ctrl-C does)."""
        self._stop_requested = True

    def add_step_hook(self, hook) -> None:
        """hook(trainer) runs after every step; tests use it to interrupt at a chosen step."""
        self._step_hooks.append(hook)

    @property
    def sampling_model(self) -> GenerativeModel:
        return self.ema.model if self.ema else self.model

    # --- the loop ----------------------------------------------------------------------------------
    def fit(self) -> TrainResult:
        previous_handler = self._install_sigint()
        try:
            return self._fit()
        except OSError as exc:  # a full disk or read-only folder while writing metrics or grids
            raise TrainingError(
                f"cannot write to {self.run_dir}: {exc.strerror or exc}"
                f"{f' ({exc.filename})' if exc.filename else ''}; the last good checkpoint is kept"
            ) from exc
        finally:
            self._lock.release()
            if previous_handler is not None:
                signal.signal(signal.SIGINT, previous_handler)

    def _fit(self) -> TrainResult:
        config, state = self.config, self.state
        start_time = time.perf_counter()
        deadline = (
            start_time + 60.0 * config.time_limit_minutes if config.time_limit_minutes > 0 else math.inf
        )
        interval = _Interval(time.perf_counter())
        last_record: dict = {}
        interrupted = False
        self.model.train()
        with self._progress() as progress:
            task = progress.add_task(
                f"{config.model}", total=self.planned_steps, completed=state.step, status=""
            )
            while state.epoch < config.epochs and not interrupted:
                epoch = state.epoch
                for images, labels in self.batches.epoch(epoch, start_batch=state.batch_in_epoch):
                    self._train_step(Batch(images, labels), interval)
                    state.step += 1
                    state.batch_in_epoch += 1
                    interval.images += images.shape[0]
                    progress.update(task, advance=1)
                    for hook in self._step_hooks:
                        hook(self)
                    if state.step % config.log_every == 0:
                        last_record = self._log(interval)
                        interval = _Interval(time.perf_counter())
                        progress.update(task, status=_status_text(last_record))
                    stop, late = self.dist.any_of(self._stop_requested, time.perf_counter() > deadline)
                    if stop or late:  # all ranks agree, so all stop at the same step
                        interrupted = stop
                        break
                else:
                    state.epoch, state.batch_in_epoch = epoch + 1, 0
                if interval.steps:
                    last_record = self._log(interval)
                    interval = _Interval(time.perf_counter())
                (late,) = self.dist.any_of(time.perf_counter() > deadline)
                stopping = interrupted or late or state.epoch >= config.epochs
                self._end_of_epoch(epoch, last_record, time.perf_counter() - start_time, final=stopping)
                interval.start = time.perf_counter()  # images/s measures training steps, not epoch-end work
                if stopping:
                    break
        seconds = time.perf_counter() - start_time
        if interrupted:
            self.console.print(f"interrupted at step {state.step}: checkpoint saved; continue with --resume")
        return TrainResult(self.run_dir, state.step, state.epoch, seconds, interrupted, last_record)

    def _train_step(self, batch: Batch, interval: _Interval) -> None:
        self.dist.seed_step(self.config.seed, self.state.step)  # under torchrun: noise per (seed, step, rank)
        self._schedule_learning_rates()
        for name, optimizer in self.optimizers.items():
            self.model.zero_grad(set_to_none=True)
            optimizer.zero_grad(set_to_none=True)  # a DP optimizer also drops its per-example gradients
            step_batch = batch
            if self.privacy:
                if name in self.privacy.hooks and len(batch.images) == 0:  # Poisson draws can be empty
                    self.privacy.empty_batch_step(name)
                    continue
                step_batch = self.privacy.batch_for(name, batch)  # non-private optimizers: no data
                self.privacy.select(name)
            with autocast(self.device, self.config.precision):
                output = self.model.training_step(step_batch, name)
            interval.losses.append((self.state.step, name, output.loss.detach()))
            for key, value in output.logs.items():
                interval.logs[key].append(value)
            output.loss.backward()
            params = [p for group in optimizer.param_groups for p in group["params"]]
            self.dist.average_gradients(params)  # before clipping: the global batch's gradient is clipped
            if self.config.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(params, self.config.grad_clip)
            optimizer.step()
        if self.ema:
            self.ema.update(self.model, self.state.step)
        interval.steps += 1

    @property
    def planned_steps(self) -> int:
        """The run's steps, all epochs: what the progress bar, the LR schedule and DP's accountant count."""
        return len(self.batches) * self.config.epochs

    def _schedule_learning_rates(self) -> None:
        """Each optimizer's learning rate for this step: a function of the step alone, so a resumed run
        follows the same schedule as an uninterrupted one."""
        factor = lr_factor(self.state.step, self.planned_steps, self.config.lr_decay_start)
        for name, optimizer in self.optimizers.items():
            for group, base in zip(optimizer.param_groups, self._base_lrs[name]):
                group["lr"] = base * factor

    def _check_finite(self, interval: _Interval) -> None:
        """Deferred NaN/inf guard: one device sync per log interval, yet it names the exact step."""
        if not interval.losses:
            return
        values = self.dist.mean(torch.stack([loss.float() for _, _, loss in interval.losses]))
        finite = torch.isfinite(values)  # averaged over ranks: a NaN on any rank stops all of them alike
        if bool(finite.all()):
            return
        index = int((~finite).nonzero()[0])
        step, name, loss = interval.losses[index][0], interval.losses[index][1], values[index]
        kept = "; the last good checkpoint is kept" if (self.run_dir / "checkpoints").is_dir() else ""
        raise TrainingError(
            f"{name} loss became {loss.item()} at step {step + 1} (epoch {self.state.epoch + 1}){kept}; "
            "try a lower learning rate or --set grad_clip=1"
        )

    def _log(self, interval: _Interval) -> dict:
        self._check_finite(interval)
        seconds = max(time.perf_counter() - interval.start, 1e-9)
        record = {
            "step": self.state.step,
            "epoch": self.state.epoch + self.state.batch_in_epoch / len(self.batches),
        }
        keys = sorted(interval.logs)  # the same keys on every rank, reduced in one call in this order
        means = [
            torch.stack([torch.as_tensor(v, dtype=torch.float32) for v in interval.logs[k]]).mean()
            for k in keys
        ]
        if means:
            means = self.dist.mean(torch.stack(means)).tolist()  # the global batch's figures
        for key in interval.logs:
            record[key] = float(means[keys.index(key)])
        record["images_per_sec"] = interval.images * self.dist.world_size / seconds
        if self.privacy:
            record["dp_epsilon"] = self.privacy.epsilon()
        if self.dist.is_main:
            with open(self.run_dir / "metrics.jsonl", "a") as handle:
                handle.write(json.dumps(record) + "\n")
        return record

    def _end_of_epoch(self, epoch: int, record: dict, elapsed: float, final: bool) -> None:
        if self.dist.is_main:
            with distributed.local_only():
                self._save_epoch(epoch, record, elapsed, final)
        self.model.train()
        self.dist.barrier("end of epoch")  # the others wait (on the CPU) while rank 0 writes its files
        self.dist.broadcast_buffers(self.sampling_model)  # rank 0 alone fitted the sampler (if any)

    def _save_epoch(self, epoch: int, record: dict, elapsed: float, final: bool) -> None:
        sampler = self.sampling_model
        every = self.config.eval_every
        eval_due = every and self.state.epoch == epoch + 1 and (epoch + 1) % every == 0  # completed epochs
        if final or eval_due or _sampler_refit_due(epoch + 1):  # only the weights that sample need it
            sampler.fit_sampler(self.images, self.labels)
        if final or (epoch + 1) % self.config.grid_every == 0:
            grid = sampler.sample(self.config.grid_size, generator=torch.Generator().manual_seed(GRID_SEED))
            origin = provenance.for_config(
                self.config, self.run_dir, kind=f"training grid, epoch {epoch + 1}"
            )
            viz.save_grid(grid, self.run_dir / "samples" / f"epoch-{epoch + 1:04d}.png", provenance=origin)
            viz.save_grid(grid, self.run_dir / "samples.png", provenance=origin)
        if eval_due:
            self._quick_eval(sampler)
        if final or time.perf_counter() - self._last_plot > PLOT_EVERY_SECONDS:
            records, _ = read_records(self.run_dir / METRICS_FILE)
            viz.plot_losses(records, self.run_dir / "loss_curves.png")
            self._last_plot = time.perf_counter()
        if self.privacy:
            self.state.extra["privacy"] = self.privacy.state_dict()
        save_checkpoint(
            self.run_dir,
            self.model,
            self.optimizers,
            self.state,
            self.ema.model if self.ema else None,
            keep=self.config.keep_checkpoints,
        )
        self.model.train()
        self.console.print(
            f"epoch {epoch + 1}/{self.config.epochs}  step {self.state.step}  {_status_text(record)}  {elapsed:.1f}s",
            highlight=False,
            soft_wrap=True,
        )

    def _quick_eval(self, sampler: GenerativeModel) -> None:
        """`eval_every`: domain-classifier FID and class coverage of eval_n samples, as a metrics.jsonl
        record (keys eval_*) at the current step, so the curves show them."""
        from ..evaluation import quick_eval

        values = quick_eval(
            sampler, self.config.data, n=self.config.eval_n, seed=GRID_SEED, log=self.console.print
        )
        record = {"step": self.state.step, "epoch": float(self.state.epoch), **values}
        with open(self.run_dir / "metrics.jsonl", "a") as handle:
            handle.write(json.dumps(record) + "\n")

    # --- plumbing ----------------------------------------------------------------------------------
    def _progress(self) -> Progress:
        return Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[status]}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=self.console,
            transient=True,
            disable=not self.console.is_terminal,
        )

    def _install_sigint(self):
        if threading.current_thread() is not threading.main_thread():
            return None

        def handler(signum, frame):
            if self._stop_requested:  # a second Ctrl-C stops at once
                raise KeyboardInterrupt
            self.console.print("stopping after this step (Ctrl-C again to abort without saving)")
            self.request_stop()

        return signal.signal(signal.SIGINT, handler)


SAMPLER_REFIT_EVERY = 10


def lr_factor(step: int, total_steps: int, decay_start: float) -> float:
    """The learning-rate multiplier at 0-based `step` of `total_steps`: 1 until decay_start * total_steps,
    then linear down to 1 / (steps in the ramp) at the last step (never 0: every step still learns)."""
    start = math.floor(decay_start * total_steps)
    if step < start or start >= total_steps:
        return 1.0
    return max(total_steps - step, 1) / (total_steps - start)


def _sampler_refit_due(epochs_done: int) -> bool:
    """Whether a learned sampler (a Gaussian mixture over codes: seconds of EM) is refitted after this epoch:
    after epochs 1, 2, 4, 8 and every 10th, besides the last epoch and quick evals, so the per-epoch grid
    is recent early on without EM dominating long runs. A schedule by epoch, not by clock: a resumed run
    refits exactly where an uninterrupted one does."""
    return epochs_done & (epochs_done - 1) == 0 or epochs_done % SAMPLER_REFIT_EVERY == 0


@dataclass
class _Interval:
    start: float
    steps: int = 0
    images: int = 0

    def __post_init__(self):
        self.losses: list[tuple[int, str, torch.Tensor]] = []
        self.logs: dict[str, list] = defaultdict(list)


def _status_text(record: dict) -> str:
    parts = [f"{k} {v:.3f}" for k, v in record.items() if k not in ("step", "epoch", "images_per_sec")]
    if "images_per_sec" in record:
        parts.append(f"{record['images_per_sec']:.0f} img/s")
    return "  ".join(parts)
