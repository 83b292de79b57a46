"""`genlab export`: a run's generator/decoder (and encoder, where there is one) as ONNX graphs with a
dynamic batch axis, plus model.json saying what every input and output means.

The exporter is torch's TorchScript-based one (`dynamo=False`): on this project's machines it exports
these models in well under a second, where the torch.export-based exporter (`dynamo=True`, the one that
will survive in torch) took many times longer for the same graph and the same outputs in a one-off check;
switch when torch drops the TorchScript exporter.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from . import provenance
from .errors import GenlabError

MODEL_JSON = "model.json"


class ExportError(GenlabError):
    """The run cannot be exported (missing exporter packages, an unexportable model)."""


class _Decoder(nn.Module):
    """z (B, d) [, labels (B,)] -> images (B, C, H, W) in [0, 1]."""

    def __init__(self, model: nn.Module, conditional: bool):
        super().__init__()
        self.model, self.conditional = model, conditional

    def forward(self, z: Tensor, labels: Tensor | None = None) -> Tensor:
        images = self.model.generate(z, labels=labels) if self.conditional else self.model.generate(z)
        return images.clamp(0.0, 1.0)


class _Encoder(nn.Module):
    """images (B, C, H, W) in [0, 1] [, labels] -> the code, or (mu, logvar) for a VAE."""

    def __init__(self, model: nn.Module, conditional: bool):
        super().__init__()
        self.model, self.conditional = model, conditional

    def forward(self, images: Tensor, labels: Tensor | None = None):
        return self.model.encode(images, labels=labels) if self.conditional else self.model.encode(images)


def export_onnx(run, out_dir: str | Path, opset: int = 18) -> list[Path]:
    """Write decoder.onnx (generator for a GAN), encoder.onnx for autoencoders, and model.json."""
    try:
        import onnx  # noqa: F401
    except ImportError as exc:
        raise ExportError("ONNX export needs the export extra: pip install 'genlab[export]'") from exc
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model = run.model.cpu().eval()
    conditional = bool(getattr(model, "is_conditional", False))
    shape = tuple(model.config.image_shape)
    latent_dim = model.config.latent_dim
    example_labels = torch.zeros(2, dtype=torch.long)
    graphs: dict[str, Any] = {}
    written: list[Path] = []

    label_input = {
        "name": "labels",
        "shape": ["batch"],
        "dtype": "int64",
        "meaning": f"class of each image, in [0, {model.config.num_classes})",
    }
    decoder_name = "generator" if not hasattr(model, "encode") else "decoder"
    z_inputs = [{"name": "z", "shape": ["batch", latent_dim], "dtype": "float32", "meaning": "latent codes"}]
    inputs = (torch.zeros(2, latent_dim),) + ((example_labels,) if conditional else ())
    path = out / f"{decoder_name}.onnx"
    names = ["z"] + (["labels"] if conditional else [])
    _export(_Decoder(model, conditional), inputs, path, names, ["images"], opset)
    graphs[decoder_name] = {
        "file": path.name,
        "inputs": z_inputs + ([label_input] if conditional else []),
        "outputs": [
            {
                "name": "images",
                "shape": ["batch", *shape],
                "dtype": "float32",
                "meaning": "images (N, C, H, W); pixel = round(255 * value)",
                "range": [0.0, 1.0],
            }
        ],
    }
    written.append(path)

    if hasattr(model, "encode"):
        path = out / "encoder.onnx"
        image_input = {
            "name": "images",
            "shape": ["batch", *shape],
            "dtype": "float32",
            "meaning": "images (N, C, H, W), pixel / 255",
            "range": [0.0, 1.0],
        }
        with torch.no_grad():
            probe = model.encode(
                torch.zeros(2, *shape), **({"labels": example_labels} if conditional else {})
            )
        if isinstance(probe, tuple):
            outputs = [
                {
                    "name": "mu",
                    "shape": ["batch", latent_dim],
                    "dtype": "float32",
                    "meaning": "mean of q(z|x)",
                },
                {
                    "name": "logvar",
                    "shape": ["batch", latent_dim],
                    "dtype": "float32",
                    "meaning": "log variance of q(z|x); z = mu + exp(logvar / 2) * eps",
                },
            ]
        else:
            outputs = [
                {"name": "code", "shape": ["batch", latent_dim], "dtype": "float32", "meaning": "the code"}
            ]
        inputs = (torch.zeros(2, *shape),) + ((example_labels,) if conditional else ())
        names = ["images"] + (["labels"] if conditional else [])
        _export(_Encoder(model, conditional), inputs, path, names, [o["name"] for o in outputs], opset)
        graphs["encoder"] = {
            "file": path.name,
            "inputs": [image_input] + ([label_input] if conditional else []),
            "outputs": outputs,
        }
        written.append(path)

    for graph in graphs.values():
        _declare_shapes(out / graph["file"], graph["inputs"], graph["outputs"])
    description = {
        "genlab_export_format": 1,
        "provenance": provenance.for_run(run, kind="onnx export"),
        "opset": opset,
        "image_shape": list(shape),
        "latent_prior": latent_prior(model),
        "graphs": graphs,
    }
    (out / MODEL_JSON).write_text(json.dumps(description, indent=2) + "\n")
    written.append(out / MODEL_JSON)
    return written


def _refinement(model: nn.Module) -> dict[str, Any]:
    """A GAN whose sample rejects or refines its codes with D (rejection, refine_steps) says so: the
    graphs do neither."""
    c = model.config
    notes = {}
    if getattr(c, "rejection", False):
        notes["rejection_not_exported"] = (
            "genlab's sample keeps a code z with probability exp(d - M), d = D's logit of G(z) and M the "
            "highest logit of a fixed pool of G's samples, and draws the others again; D is not exported, so "
            "the generator graph gives G's samples as drawn"
        )
    if getattr(c, "refine_steps", 0) > 0:
        notes["refinement_not_exported"] = (
            f"genlab's sample moves each z by {c.refine_steps} Langevin steps (step {c.refine_step_size:g}) "
            f"down |z|^2/2 - {c.refine_d_weight:g} * D's logit of G(z); D is not exported, so the generator "
            "graph gives the unrefined samples of these codes"
        )
    return notes


def latent_prior(model: nn.Module) -> dict[str, Any]:
    """How to draw z for the decoder: N(0, I), or the fitted Gaussian mixture of the autoencoder (or of a
    VAE with sampler=gmm), with the VAE's sampling temperature scaling eps. A CVAE with sampler=gmm also
    gives one mixture per class under `per_class`: genlab draws the codes of class k from the k-th."""
    mixture = getattr(model, "prior", None) or getattr(model, "code_mixture", None)
    temperature = float(getattr(model.config, "temperature", 1.0))
    if mixture is None:
        prior = {"kind": "standard normal", "mean": 0.0, "std": temperature, "dim": model.config.latent_dim}
        return {**prior, **_refinement(model)}
    prior = {
        "kind": "gaussian mixture: pick component k with probability exp(log_weights[k]), then "
        "z = means[k] + scale_tril[k] @ (temperature * eps) with eps ~ N(0, I)",
        "temperature": temperature,
        **_mixture_arrays(mixture),
    }
    class_mixtures = getattr(model, "class_mixtures", None)
    if class_mixtures is not None:
        prior["per_class_use"] = (
            "for a sample of class c draw z the same way from per_class[c]; the pooled mixture above "
            "follows the asked class less closely"
        )
        prior["per_class"] = [_mixture_arrays(m) for m in class_mixtures]
    return prior


def _mixture_arrays(mixture: nn.Module) -> dict[str, list]:
    return {
        "log_weights": mixture.log_weights.tolist(),
        "means": mixture.means.tolist(),
        "scale_tril": mixture.scale_tril.tolist(),
    }


def _export(
    module: nn.Module,
    inputs: tuple[Tensor, ...],
    path: Path,
    input_names: list[str],
    output_names: list[str],
    opset: int,
) -> None:
    module.eval()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
            axes = {name: {0: "batch"} for name in input_names + output_names}
            torch.onnx.export(
                module,
                inputs,
                path,
                input_names=input_names,
                output_names=output_names,
                dynamo=False,
                dynamic_axes=axes,
                opset_version=opset,
            )
    except Exception as exc:  # the exporters raise many types; the user gets one line
        first_line = (str(exc).splitlines() or [""])[0]
        raise ExportError(f"ONNX export of {path.name} failed: {type(exc).__name__}: {first_line}") from exc


def _declare_shapes(path: Path, inputs: list[dict], outputs: list[dict]) -> None:
    """Write the described shapes into the graph's signature: the exporter leaves some dimensions as
    generated symbols (a VAE's mu comes out of a Slice as 'Slicemu_dim_1'); only 'batch' stays symbolic."""
    import onnx

    graph = onnx.load(str(path))
    for values, described in ((graph.graph.input, inputs), (graph.graph.output, outputs)):
        for value, spec in zip(values, described):
            dims = value.type.tensor_type.shape.dim
            for dim, size in zip(dims, spec["shape"]):
                if isinstance(size, str):
                    dim.dim_param = size
                else:
                    dim.dim_value = size
    onnx.checker.check_model(graph)
    onnx.save(graph, str(path))
