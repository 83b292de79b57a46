"""Checkpoints: safetensors for tensors, JSON for everything else; atomic, the last good one always kept.

    run_dir/config.json                      what rebuilds the model: family, model config, train config
    run_dir/checkpoints/LATEST               name of the newest complete checkpoint
    run_dir/checkpoints/step-0000700/        model.safetensors [ema.safetensors] optimizers.safetensors
                                             rng.safetensors state.json
A checkpoint is written into a hidden temp folder and renamed into place; only then does LATEST move
(itself replaced atomically), and only then are older checkpoints pruned. A crash at any point leaves
the previous checkpoint intact and LATEST pointing at a complete one. Nothing is ever unpickled.
"""

from __future__ import annotations

import errno
import json
import math
import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from ..errors import CheckpointError

CONFIG_FILE = "config.json"
CHECKPOINT_DIR = "checkpoints"
LATEST_FILE = "LATEST"
STATE_FILE = "state.json"
FORMAT_VERSION = 1
CHECKPOINT_NAME = re.compile(r"step-\d{7,}")  # what LATEST may name: a sibling folder, never a path


@dataclass
class TrainingState:
    """Where training stands: the next batch to run is (epoch, batch_in_epoch)."""

    step: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


def write_json_atomic(path: Path, value: Any) -> None:
    temp = path.with_name(f".{path.name}.tmp")
    with open(temp, "w") as handle:
        json.dump(value, handle, indent=2)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temp, path)


def read_json(path: Path, expect: type | None = None) -> Any:
    """A run file's JSON; with `expect`, its top level must be of that type (a dict, usually)."""
    try:
        value = json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise CheckpointError(f"missing {path.name} in {path.parent}") from exc
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise CheckpointError(
            f"corrupt {path}: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
        ) from exc
    if expect is not None and not isinstance(value, expect):
        raise CheckpointError(
            f"corrupt {path}: expected a JSON {_json_kind(expect)}, found a {_json_kind(type(value))}"
        )
    return value


def _json_kind(kind: type) -> str:
    names = {dict: "object", list: "list", str: "string", int: "number", float: "number", bool: "boolean"}
    return names.get(kind, "null" if kind is type(None) else kind.__name__)


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def read_state(checkpoint: Path) -> dict[str, Any]:
    """A checkpoint's state.json, schema-checked: a damaged file names itself and the bad field."""
    path = checkpoint / "state.json"
    meta = read_json(path, expect=dict)

    def bad(what: str) -> CheckpointError:
        return CheckpointError(f"corrupt {path}: {what}")

    for key in ("step", "epoch", "batch_in_epoch"):
        if key not in meta:
            raise bad(f"field {key!r} is missing")
        if not _is_count(meta[key]):
            raise bad(f"field {key!r} must be a whole number >= 0, got {meta[key]!r}")
    extra = meta.get("extra", {})
    if not isinstance(extra, dict):
        raise bad("field 'extra' must be an object")
    privacy = extra.get("privacy")
    if privacy is not None and not (
        isinstance(privacy, dict) and all(_is_number(privacy.get(key)) for key in ("epsilon", "delta"))
    ):
        raise bad("extra.privacy must be an object with numbers epsilon and delta")
    optimizers = meta.get("optimizers", {})
    if not isinstance(optimizers, dict):
        raise bad("field 'optimizers' must be an object")
    for name, entry in optimizers.items():
        if not isinstance(entry, dict) or not isinstance(entry.get("param_groups"), list):
            raise bad(f"optimizer {name!r} has no list of param_groups")
        if not all(isinstance(group, dict) for group in entry["param_groups"]):
            raise bad(f"optimizer {name!r} has a param group that is not an object")
        scalars = entry.get("scalars", {})
        if not isinstance(scalars, dict) or not all(isinstance(v, dict) for v in scalars.values()):
            raise bad(f"optimizer {name!r} has malformed scalars")
    return meta


def _contiguous(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {key: value.detach().contiguous().cpu() for key, value in tensors.items()}


def _split_optimizer_state(name: str, optimizer: torch.optim.Optimizer) -> tuple[dict, dict]:
    """Optimizer state -> (tensors for safetensors, JSON-able rest)."""
    state = optimizer.state_dict()
    tensors, scalars = {}, {}
    for param_index, param_state in state["state"].items():
        for key, value in param_state.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{name}/{param_index}/{key}"] = value
            else:
                scalars.setdefault(str(param_index), {})[key] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def _join_optimizer_state(name: str, tensors: dict[str, torch.Tensor], meta: dict) -> dict:
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        opt_name, param_index, field_name = key.split("/", 2)
        if opt_name == name:
            state.setdefault(int(param_index), {})[field_name] = value
    for param_index, values in meta.get("scalars", {}).items():
        state.setdefault(int(param_index), {}).update(values)
    return {"state": state, "param_groups": meta["param_groups"]}


def _rng_tensors() -> dict[str, torch.Tensor]:
    tensors = {"torch_cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        for index, cuda_state in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"torch_cuda_{index}"] = cuda_state
    return tensors


def _restore_rng(tensors: dict[str, torch.Tensor]) -> None:
    cpu = tensors["torch_cpu"]
    if cpu.dtype != torch.uint8 or cpu.shape != torch.get_rng_state().shape:
        raise ValueError(f"torch_cpu is {cpu.dtype} of shape {tuple(cpu.shape)}")
    torch.set_rng_state(cpu)
    cuda_states = [tensors[k] for k in sorted(tensors) if k.startswith("torch_cuda_")]
    if cuda_states and torch.cuda.is_available() and len(cuda_states) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda_states)


def save_checkpoint(
    run_dir: Path,
    model: torch.nn.Module,
    optimizers: dict[str, torch.optim.Optimizer],
    state: TrainingState,
    ema: torch.nn.Module | None = None,
    keep: int = 2,
) -> Path:
    """Write a complete checkpoint atomically and return its folder. A write that fails (a full disk, a
    read-only folder) is a CheckpointError that says so; the previous checkpoint and LATEST stay intact."""
    root = Path(run_dir) / CHECKPOINT_DIR
    name = f"step-{state.step:07d}"
    temp = root / f".tmp-{name}"
    try:
        return _write_checkpoint(root, name, temp, model, optimizers, state, ema, keep)
    except (OSError, SafetensorError) as exc:
        shutil.rmtree(temp, ignore_errors=True)  # free what the half-written checkpoint took
        raise CheckpointError(
            f"cannot write checkpoint {name} in {root}: {describe_write_error(exc)}; the last good checkpoint is kept"
        ) from exc


def describe_write_error(exc: BaseException) -> str:
    """A full disk or read-only folder in a few words, whichever layer (os, safetensors) reported it."""
    text = str(exc)
    if getattr(exc, "errno", None) == errno.ENOSPC or "No space left" in text:
        return "no space left on the device"
    if getattr(exc, "errno", None) in (errno.EROFS, errno.EACCES, errno.EPERM) or "Read-only" in text:
        return "the folder is read-only or not writable"
    return getattr(exc, "strerror", None) or (text.splitlines()[0] if text else type(exc).__name__)


def _write_checkpoint(
    root: Path,
    name: str,
    temp: Path,
    model: torch.nn.Module,
    optimizers: dict[str, torch.optim.Optimizer],
    state: TrainingState,
    ema: torch.nn.Module | None,
    keep: int,
) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    final = root / name
    shutil.rmtree(temp, ignore_errors=True)
    temp.mkdir()
    save_file(_contiguous(model.state_dict()), str(temp / "model.safetensors"))
    if ema is not None:
        save_file(_contiguous(ema.state_dict()), str(temp / "ema.safetensors"))
    optimizer_tensors, optimizer_meta = {}, {}
    for opt_name, optimizer in optimizers.items():
        tensors, meta = _split_optimizer_state(opt_name, optimizer)
        optimizer_tensors.update(tensors)
        optimizer_meta[opt_name] = meta
    save_file(_contiguous(optimizer_tensors), str(temp / "optimizers.safetensors"))
    save_file(_contiguous(_rng_tensors()), str(temp / "rng.safetensors"))
    write_json_atomic(
        temp / "state.json",
        {
            "format": FORMAT_VERSION,
            "step": state.step,
            "epoch": state.epoch,
            "batch_in_epoch": state.batch_in_epoch,
            "extra": state.extra,
            "optimizers": optimizer_meta,
        },
    )
    if final.exists():  # a re-save at the same step (e.g. Ctrl-C right after an epoch checkpoint)
        shutil.rmtree(final)
    os.replace(temp, final)
    write_json_atomic(root / LATEST_FILE, {"checkpoint": name})
    _prune(root, keep, newest=name)
    return final


def _prune(root: Path, keep: int, newest: str) -> None:
    complete = sorted(p for p in root.glob("step-*") if p.is_dir())
    for old in complete[:-keep]:
        if old.name != newest:
            shutil.rmtree(old, ignore_errors=True)
    for stale in root.glob(".tmp-step-*"):  # left by a kill mid-write; the run lock says no one writes it
        shutil.rmtree(stale, ignore_errors=True)


def latest_checkpoint(run_dir: Path) -> Path:
    """The folder of the newest complete checkpoint, with a clear error when there is none."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise CheckpointError(f"run directory not found: {run_dir}")
    if not (run_dir / CONFIG_FILE).is_file():
        raise CheckpointError(f"{run_dir} is not a genlab run directory (no {CONFIG_FILE})")
    root = run_dir / CHECKPOINT_DIR
    pointer = root / LATEST_FILE
    if pointer.is_file():
        name = read_json(pointer, expect=dict).get("checkpoint")
        if not isinstance(name, str) or not CHECKPOINT_NAME.fullmatch(name):
            raise CheckpointError(
                f"corrupt {pointer}: it must name a checkpoint folder of this run (step-NNNNNNN), "
                f"got {name!r}"
            )
        if (root / name / "state.json").is_file():
            return root / name
    complete = sorted(p for p in root.glob("step-*") if (p / "state.json").is_file())
    if not complete:
        raise CheckpointError(f"no checkpoint in {run_dir}: the run has not finished an epoch yet")
    return complete[-1]


def load_weights(path: Path) -> dict[str, torch.Tensor]:
    try:
        return load_file(str(path))
    except FileNotFoundError as exc:
        raise CheckpointError(f"missing weights file {path}") from exc
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"corrupt weights file {path}: {str(exc).splitlines()[0]}") from exc


def check_finite(weights: dict[str, torch.Tensor], source: Path) -> None:
    """NaN or inf weights would only fail deep inside sampling: refuse them at load, by name."""
    for key, value in weights.items():
        if value.is_floating_point() and not bool(torch.isfinite(value).all()):
            raise CheckpointError(f"weights in {source} are not finite (NaN or inf in {key!r})")


def load_model_weights(model: torch.nn.Module, weights: dict[str, torch.Tensor], source: Path) -> None:
    upgrade = getattr(model, "upgrade_state_dict", None)  # runs saved by an older genlab keep loading
    try:
        weights = upgrade(weights) if upgrade else weights
        model.load_state_dict(weights, strict=True)
    except (RuntimeError, KeyError, ValueError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(
            f"weights in {source} do not fit the model in its config.json ({reason[:200]})"
        ) from exc
    check_finite(weights, source)


def load_checkpoint(
    checkpoint: Path,
    model: torch.nn.Module,
    optimizers: dict[str, torch.optim.Optimizer],
    ema: torch.nn.Module | None = None,
) -> TrainingState:
    """Restore everything needed to continue training exactly where the checkpoint was taken."""
    meta = read_state(checkpoint)
    load_model_weights(model, load_weights(checkpoint / "model.safetensors"), checkpoint)
    if ema is not None:
        ema_path = checkpoint / "ema.safetensors"
        source = ema_path if ema_path.is_file() else checkpoint / "model.safetensors"
        load_model_weights(ema, load_weights(source), checkpoint)
    optimizer_tensors = load_weights(checkpoint / "optimizers.safetensors")
    device = next(model.parameters()).device
    for name, optimizer in optimizers.items():
        if name not in meta.get("optimizers", {}):
            raise CheckpointError(f"checkpoint {checkpoint} has no state for optimizer {name!r}")
        tensors = {k: v.to(device) if v.dim() > 0 else v for k, v in optimizer_tensors.items()}
        try:
            saved = _join_optimizer_state(name, tensors, meta["optimizers"][name])
            _check_optimizer_shapes(optimizer, saved)
            optimizer.load_state_dict(saved)
        except (ValueError, KeyError, TypeError, RuntimeError, IndexError) as exc:
            raise CheckpointError(
                f"optimizer state in {checkpoint} does not fit the model ({_first_line(exc)})"
            ) from exc
    rng = load_weights(checkpoint / "rng.safetensors")
    try:
        _restore_rng(rng)
    except (KeyError, RuntimeError, TypeError, ValueError) as exc:
        raise CheckpointError(
            f"corrupt {checkpoint / 'rng.safetensors'}: not a saved random-number state ({_first_line(exc)})"
        ) from exc
    return TrainingState(meta["step"], meta["epoch"], meta["batch_in_epoch"], meta.get("extra", {}))


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:200] if text else type(exc).__name__


def _check_optimizer_shapes(optimizer: torch.optim.Optimizer, saved: dict) -> None:
    """Optimizer state from another model can load silently and only fail at the next step: compare
    every saved moment with the shape of the parameter it belongs to."""
    params = [p for group in optimizer.param_groups for p in group["params"]]
    saved_count = sum(len(g.get("params", [])) for g in saved["param_groups"] if isinstance(g, dict))
    if saved_count != len(params):
        raise ValueError(f"{saved_count} parameters saved, the model has {len(params)}")
    for index, values in saved["state"].items():
        if not 0 <= index < len(params):
            raise ValueError(f"state for parameter {index}, the model has {len(params)}")
        for key, value in values.items():
            if isinstance(value, torch.Tensor) and value.dim() > 0 and value.shape != params[index].shape:
                raise ValueError(
                    f"{key} of parameter {index} has shape {tuple(value.shape)}, "
                    f"the parameter {tuple(params[index].shape)}"
                )
            if (
                isinstance(value, torch.Tensor)
                and value.is_floating_point()
                and not bool(value.isfinite().all())
            ):
                raise ValueError(f"{key} of parameter {index} is not finite")
