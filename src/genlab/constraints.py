"""Declarative checks of settings: every config dataclass lists `constraints = {field: Check}`, and
`check_config` applies them in one place, so a bad value is refused when the config is built (before any
data loads or tensor is made), with the valid range or choices in the message.

Types are checked (and strings from `--set` converted) by `coerce_value`; the Checks here judge values.
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass
from typing import Any

import yaml

from .errors import ConfigError

MAX_WIDTH = 65_536  # layer widths, latent sizes, channels: beyond this a model no longer fits in memory
MAX_CHANNELS = 4_096  # conv widths (doubled per stage) and minibatch-discrimination kernels
MAX_SEED = 2**63 - 1  # torch.manual_seed takes a signed 64-bit integer
MAX_CLASSES = 100_000  # more classes than any image dataset genlab can hold in memory
_DEVICE = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")


class Check:
    """One rule for one setting. `problem(value)` is None when the value is fine, else what it must be."""

    def problem(self, value: Any) -> str | None:
        raise NotImplementedError


@dataclass(frozen=True)
class Between(Check):
    """A finite number in a range; `low_open`/`high_open` exclude the bound ((0, inf) for learning rates)."""

    low: float = -math.inf
    high: float = math.inf
    low_open: bool = False
    high_open: bool = False

    def describe(self) -> str:
        low, high = _bound(self.low), _bound(self.high)
        if math.isinf(self.high):
            return f"{'>' if self.low_open else '>='} {low}"
        left, right = "(" if self.low_open else "[", ")" if self.high_open else "]"
        return f"in {left}{low}, {high}{right}"

    def problem(self, value: Any) -> str | None:
        # Compared as given, not as floats: 2**63 must not pass as 2**63 - 1 after rounding.
        finite = isinstance(value, int) or math.isfinite(value)
        above = value > self.low if self.low_open else value >= self.low
        below = value < self.high if self.high_open else value <= self.high
        return None if finite and above and below else f"must be {self.describe()}"


def _bound(value: float) -> str:
    return str(value) if isinstance(value, int) else f"{value:g}"


def at_least(low: float, high: float = math.inf) -> Between:
    return Between(low, high)


def positive(high: float = math.inf) -> Between:
    return Between(0.0, high, low_open=True)


def fraction(high_open: bool = False) -> Between:
    """A share or probability: [0, 1], or [0, 1) with high_open."""
    return Between(0.0, 1.0, high_open=high_open)


@dataclass(frozen=True)
class OneOf(Check):
    choices: tuple[str, ...]

    def problem(self, value: Any) -> str | None:
        return None if value in self.choices else f"must be one of {', '.join(self.choices)}"


@dataclass(frozen=True)
class Policy(Check):
    """A comma-separated list of names from `choices`, in any order, each at most once; '' is none."""

    choices: tuple[str, ...]

    @staticmethod
    def names(value: Any) -> tuple[str, ...]:
        """'a, b' -> ('a', 'b'); '' -> ()."""
        return tuple(name.strip() for name in str(value).split(",") if name.strip())

    def problem(self, value: Any) -> str | None:
        names = self.names(value)
        if all(name in self.choices for name in names) and len(set(names)) == len(names):
            return None
        return f"must be '' or a comma-separated list of {', '.join(self.choices)}, each once"


@dataclass(frozen=True)
class Sizes(Check):
    """A tuple of integer sizes, each in [low, high]; `length` fixes how many (image_shape is 3)."""

    low: int = 1
    high: int = MAX_WIDTH
    length: int | None = None

    def problem(self, value: Any) -> str | None:
        count = "" if self.length is None else f"{self.length} "
        what = f"a list of {count}integers in [{self.low}, {self.high}]"
        if self.length is not None and len(value) != self.length:
            return f"must be {what}"
        return None if all(self.low <= v <= self.high for v in value) else f"must be {what}"


@dataclass(frozen=True)
class DeviceName(Check):
    def problem(self, value: Any) -> str | None:
        return None if _DEVICE.match(str(value)) else "must be auto, cpu, cuda, cuda:N or mps"


FLAG = None  # a bool setting: its type check is all there is (listed so every field is accounted for)


def check_device_name(name: str) -> str:
    """`name` if torch can use it as a device here, else a ConfigError (not torch's RuntimeError)."""
    problem = DeviceName().problem(name)
    if problem:
        raise ConfigError(f"device {problem}, got {name!r}")
    if name.startswith("cuda:"):
        import torch

        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count and int(name[5:]) >= count:
            raise ConfigError(f"device {name!r} does not exist: this machine has cuda:0..cuda:{count - 1}")
    return name


MAX_WEIGHTS = 1_000_000_000  # 4 GB of float32 weights, 16 GB with Adam's two moments and the gradients


def check_model_size(model_class: type, config: Any) -> None:
    """Refuse a model too large to allocate (e.g. three hidden layers of 65536), counted on PyTorch's meta
    device, which builds modules with shapes but no memory. A model that cannot be built shape-only is
    not estimated; a ValueError of the model's own checks propagates as it would from the real build."""
    import torch

    try:
        with torch.device("meta"):
            model = model_class(config)
    except (RuntimeError, NotImplementedError):
        return
    weights = sum(t.numel() for t in [*model.parameters(), *model.buffers()])
    if weights > MAX_WEIGHTS:
        raise ConfigError(
            f"these {model_class.name} settings make {weights:,} weights; at most {MAX_WEIGHTS:,} fit "
            "in memory: use smaller hidden sizes, widths or latent_dim"
        )


def check_config(config: Any, prefix: str = "") -> None:
    """Apply the config's constraints table to every field; the first bad one is a ConfigError."""
    table = type(config).constraints
    for field in dataclasses.fields(config):
        check = table.get(field.name)
        if check is None:
            continue
        value = getattr(config, field.name)
        problem = check.problem(value)
        if problem:
            raise ConfigError(f"{prefix}{field.name} {problem}, got {_show(value)}")


def _show(value: Any) -> str:
    if isinstance(value, tuple):
        return "[" + ", ".join(str(v) for v in value) + "]"
    return repr(value) if isinstance(value, str) else f"{value}"


# --- types ---------------------------------------------------------------------------------------------
def coerce_value(key: str, value: Any, like: Any) -> Any:
    """Convert `value` (often a string from the command line, or JSON from a saved config) to the type of
    the default `like`; a bool is no integer here (`epochs=true` is an error, not 1)."""
    if isinstance(value, str) and not isinstance(like, str):
        try:
            value = yaml.safe_load(value)
        except yaml.YAMLError as exc:
            raise ConfigError(f"cannot parse value {value!r} for {key}") from exc
    if isinstance(like, bool):
        if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no", "1", "0"):
            return value.lower() in ("true", "yes", "1")
        if not isinstance(value, bool):
            raise ConfigError(f"bad value {_show(value)} for {key}: expected true or false")
        return value
    if isinstance(like, int):
        return _integer(key, value, "an integer")
    if isinstance(like, float):
        number = _number(value)
        if number is None:
            raise ConfigError(f"bad value {_show(value)} for {key}: expected a number")
        return number
    if isinstance(like, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"bad value {_show(value)} for {key}: expected a list such as [64, 32]")
        return tuple(_integer(key, v, "a list of integers such as [64, 32]", value) for v in value)
    if isinstance(like, str):
        if isinstance(value, (dict, list)):
            raise ConfigError(f"bad value {_show(value)} for {key}: expected a string")
        return str(value)
    return value


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, str):  # YAML reads 1e-4 (no dot) as a string
        try:
            return float(value)
        except ValueError:
            return None
    return float(value) if isinstance(value, (int, float)) else None


def _integer(key: str, value: Any, words: str, whole: Any = None) -> int:
    number = value if isinstance(value, int) and not isinstance(value, bool) else _number(value)
    if number is None or (isinstance(number, float) and not number.is_integer()):
        raise ConfigError(
            f"bad value {_show(whole if whole is not None else value)} for {key}: expected {words}"
        )
    return int(number)
