"""The runs a server offers: each loaded once at start-up under a name; clients pick runs by name only.

A name is chosen on the command line (the folder's name, or `name=path`), never taken from a client as a
path, so no request can make the server open a file it was not told about.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import provenance as prov
from ..errors import ConfigError
from ..runs import Run, load
from ..training.checkpoint import CONFIG_FILE, read_json

RUN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
FIGURES = {  # figure name the client may ask for -> file in the run directory
    "loss_curves": "loss_curves.png",
    "samples": "samples.png",
    "eval_samples": "eval_samples.png",
    "eval_nearest": "eval_nearest.png",
    "eval_classes": "eval_classes.png",
}
MAX_CURVE_POINTS = 300  # per series: enough for a plot, small enough for every page load
MAX_METRICS_BYTES = 32 * 1024 * 1024


@dataclass
class ServedRun:
    name: str
    run: Run
    class_names: list[str] | None
    eval_figures: list[dict[str, Any]] | None
    _curves: dict[str, Any] | None = field(default=None, repr=False)

    @property
    def model(self):
        return self.run.model

    @property
    def is_conditional(self) -> bool:
        return bool(getattr(self.model, "is_conditional", False))

    @property
    def num_classes(self) -> int:
        return int(self.model.config.num_classes)

    @property
    def can_reconstruct(self) -> bool:
        return hasattr(self.model, "reconstruct")

    @property
    def corruption(self) -> dict[str, float] | None:
        """The denoising settings of an autoencoder trained on corrupted inputs, else None."""
        noise_std = float(getattr(self.model.config, "noise_std", 0.0) or 0.0)
        mask_prob = float(getattr(self.model.config, "mask_prob", 0.0) or 0.0)
        if noise_std <= 0 and mask_prob <= 0:
            return None
        return {"noise_std": noise_std, "mask_prob": mask_prob}

    def summary(self) -> dict[str, Any]:
        state = self.run.state
        return {
            "name": self.name,
            "model": self.model.name,
            "preset": self.run.config.preset,
            "dataset": self.run.config.data,
            "epoch": state.get("epoch"),
            "epochs_planned": self.run.config.epochs,
            "step": state.get("step"),
            "conditional": self.is_conditional,
        }

    def detail(self) -> dict[str, Any]:
        return {
            **self.summary(),
            "checkpoint": self.run.checkpoint.name,
            "parameters": self.model.num_parameters(),
            "image_shape": list(self.model.config.image_shape),
            "num_classes": self.num_classes,
            "class_names": self.class_names,
            "can_reconstruct": self.can_reconstruct,
            "denoising": self.corruption,
            "eval": self.eval_figures,
            "figures": [name for name, file in FIGURES.items() if (self.run.run_dir / file).is_file()],
            "model_config": _jsonable(dataclasses.asdict(self.model.config)),
        }

    @property
    def weights_sha256(self) -> str:
        return prov.checkpoint_sha256(self.run.checkpoint)

    def provenance(
        self,
        kind: str,
        seed: int | None = None,
        label: int | None = None,
        source: str | None = None,
        **request: Any,
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """What an image the server returns is: genlab's provenance record (model, run, SHA-256 of the
        weights, seed, label, IPTC source type; `source` overrides the latter) and the request's details."""
        record = prov.for_run(self.run, seed=seed, label=label, kind=kind)
        if source is not None:
            record["digital_source_type"] = source
        details = {
            "served_as": self.name,
            "checkpoint": self.run.checkpoint.name,
            "step": self.run.state.get("step"),
        }
        return record, {**details, **request}

    def loss_curves(self) -> dict[str, Any]:
        """The logged series of metrics.jsonl, each thinned to at most MAX_CURVE_POINTS points."""
        if self._curves is None:
            self._curves = read_loss_curves(self.run.run_dir / "metrics.jsonl")
        return self._curves


def read_loss_curves(path: Path) -> dict[str, Any]:
    series: dict[str, tuple[list[int], list[float]]] = {}
    if path.is_file() and path.stat().st_size <= MAX_METRICS_BYTES:
        for line in path.read_text().splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue  # a half-written last line of a run still training
            step = record.get("step") if isinstance(record, dict) else None
            if not isinstance(step, int):
                continue
            for key, value in record.items():
                if key in ("step", "epoch", "time", "images_per_sec") or not _finite(value):
                    continue
                steps, values = series.setdefault(key, ([], []))
                steps.append(step)
                values.append(float(value))
    thinned = {}
    for key, (steps, values) in sorted(series.items()):
        stride = max(1, -(-len(steps) // MAX_CURVE_POINTS))
        thinned[key] = {"step": steps[::stride], "value": values[::stride]}
    return {"series": thinned}


def parse_run_arguments(arguments: list[str]) -> dict[str, Path]:
    """`runs/gan`, `mygan=runs/gan` -> {"gan": Path("runs/gan"), "mygan": ...}; names unique and plain."""
    named: dict[str, Path] = {}
    for argument in arguments:
        name, sep, path = argument.partition("=")
        if not sep:
            name, path = Path(argument).resolve().name, argument
        if not RUN_NAME.match(name):
            raise ConfigError(
                f"run name {name!r} must be 1-64 letters, digits, '.', '_' or '-' (give it as name=path)"
            )
        if name in named:
            raise ConfigError(f"two runs are named {name!r}: name one of them with name=path")
        named[name] = Path(path)
    if not named:
        raise ConfigError("name at least one run directory to serve")
    return named


def load_catalog(run_dirs: dict[str, Path], device: str = "cpu") -> dict[str, ServedRun]:
    return {name: load_served_run(name, path, device) for name, path in run_dirs.items()}


def load_served_run(name: str, run_dir: Path, device: str = "cpu") -> ServedRun:
    run = load(run_dir, device=device)
    saved = read_json(run.run_dir / CONFIG_FILE)
    data = saved.get("data") if isinstance(saved, dict) else None
    class_names = data.get("class_names") if isinstance(data, dict) else None
    return ServedRun(
        name=name,
        run=run,
        class_names=[str(c) for c in class_names] if isinstance(class_names, list) else None,
        eval_figures=read_eval_figures(run.run_dir),
    )


def read_eval_figures(run_dir: Path) -> list[dict[str, Any]] | None:
    """The headline numbers of the run's eval.json (as `genlab eval` prints them), or None."""
    if not (run_dir / "eval.json").is_file():
        return None
    from ..evaluation.report import HEADLINE, headline

    try:
        flat = headline(json.loads((run_dir / "eval.json").read_text()))
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None  # a damaged eval.json is not worth refusing to serve the run over
    return [
        {"key": key, "title": title, "value": flat[key], "lower_is_better": lower}
        for key, title, _, lower in HEADLINE
        if _finite(flat.get(key))
    ]


def _finite(value: Any) -> bool:
    """A plain finite number (JSON has no NaN or inf; bools are not figures)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value if isinstance(value, (str, int, float, bool)) or value is None else str(value)
