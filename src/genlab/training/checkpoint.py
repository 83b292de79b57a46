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

import json
import os
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
FORMAT_VERSION = 1


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


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise CheckpointError(f"missing {path.name} in {path.parent}") from exc
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"corrupt {path}: {str(exc).splitlines()[0]}") from exc


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
    for param_index, values in meta["scalars"].items():
        state.setdefault(int(param_index), {}).update(values)
    return {"state": state, "param_groups": meta["param_groups"]}


def _rng_tensors() -> dict[str, torch.Tensor]:
    tensors = {"torch_cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        for index, cuda_state in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"torch_cuda_{index}"] = cuda_state
    return tensors


def _restore_rng(tensors: dict[str, torch.Tensor]) -> None:
    torch.set_rng_state(tensors["torch_cpu"])
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
    """Write a complete checkpoint atomically and return its folder."""
    root = Path(run_dir) / CHECKPOINT_DIR
    root.mkdir(parents=True, exist_ok=True)
    name = f"step-{state.step:07d}"
    final, temp = root / name, root / f".tmp-{name}"
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
        name = read_json(pointer).get("checkpoint", "")
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


def load_model_weights(model: torch.nn.Module, weights: dict[str, torch.Tensor], source: Path) -> None:
    upgrade = getattr(model, "upgrade_state_dict", None)  # runs saved by an older genlab keep loading
    weights = upgrade(weights) if upgrade else weights
    try:
        model.load_state_dict(weights, strict=True)
    except RuntimeError as exc:
        raise CheckpointError(f"weights in {source} do not fit the model in its config.json") from exc


def load_checkpoint(
    checkpoint: Path,
    model: torch.nn.Module,
    optimizers: dict[str, torch.optim.Optimizer],
    ema: torch.nn.Module | None = None,
) -> TrainingState:
    """Restore everything needed to continue training exactly where the checkpoint was taken."""
    meta = read_json(checkpoint / "state.json")
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
            optimizer.load_state_dict(_join_optimizer_state(name, tensors, meta["optimizers"][name]))
        except (ValueError, KeyError) as exc:
            raise CheckpointError(f"optimizer state in {checkpoint} does not fit the model") from exc
    _restore_rng(load_weights(checkpoint / "rng.safetensors"))
    return TrainingState(meta["step"], meta["epoch"], meta["batch_in_epoch"], meta.get("extra", {}))
