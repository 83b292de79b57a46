"""`genlab provenance | explain | export`: where an image came from, what a model learned, and the model
as a portable ONNX graph."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from ..errors import ConfigError
from .common import device, device_name, positive_int, seed_int


def add_signing_options(parser) -> None:
    parser.add_argument("--sign-cert", help="C2PA: certificate chain (PEM, signer first) to sign PNGs with")
    parser.add_argument("--sign-key", help="C2PA: the private key (PEM) of --sign-cert")


def signer_from_args(args):
    """A checked C2paSigner when both --sign-cert and --sign-key are given, None when neither is."""
    if not args.sign_cert and not args.sign_key:
        return None
    if not (args.sign_cert and args.sign_key):
        raise ConfigError("C2PA signing needs both --sign-cert and --sign-key")
    from ..provenance import C2paSigner

    return C2paSigner(args.sign_cert, args.sign_key)


def register(commands) -> None:
    provenance = commands.add_parser(
        "provenance", help="print (and verify, or C2PA-sign) the provenance of images genlab wrote"
    )
    provenance.add_argument("files", nargs="+", metavar="FILE")
    provenance.add_argument("--json", action="store_true", help="one JSON object per file")
    add_signing_options(provenance)
    provenance.set_defaults(handler=cmd_provenance)

    explain = commands.add_parser(
        "explain", help="latent traversals, class directions and GAN saliency maps for a run"
    )
    explain.add_argument("run_dir")
    explain.add_argument("--out", help="folder for explain.md and its PNGs (default: the run directory)")
    explain.add_argument("--dims", type=positive_int, default=8, help="latent dimensions to traverse")
    explain.add_argument("--steps", type=positive_int, default=9, help="images per traversal row")
    explain.add_argument("--n", type=positive_int, default=2000, help="dataset images used for statistics")
    explain.add_argument("--seed", type=seed_int, default=0)
    explain.add_argument("--device", type=device_name, default="cpu")
    explain.set_defaults(handler=cmd_explain)

    export = commands.add_parser("export", help="export a run's decoder/generator (and encoder) as ONNX")
    export.add_argument("run_dir")
    export.add_argument("--format", default="onnx", choices=["onnx"])
    export.add_argument("--out", required=True, help="folder for the .onnx files and model.json")
    export.add_argument("--opset", type=positive_int, default=18)
    export.set_defaults(handler=cmd_export)


def cmd_provenance(args) -> int:
    from .. import provenance

    signer = signer_from_args(args)
    missing, invalid = [], []
    for name in args.files:
        record = provenance.read(name)
        if record is None:
            missing.append(name)
            print(f"{name}: no genlab provenance")
            continue
        if signer:
            signer.sign(name, record)
        state, detail = provenance.verify_c2pa(name)
        if state == "invalid":
            invalid.append(name)
        if args.json:
            print(json.dumps({"file": name, **record, "c2pa": state, "c2pa_detail": detail}))
            continue
        print(f"{name}:")
        for line in provenance.describe(record):
            print(f"  {line}")
        print(f"  c2pa: {state} ({detail})")
    problems = [f"no genlab provenance in {', '.join(missing)}"] if missing else []
    problems += [f"C2PA credentials fail verification in {', '.join(invalid)}"] if invalid else []
    if problems:
        print(f"genlab: error: {'; '.join(problems)}", file=sys.stderr)
        return 2
    return 0


def cmd_explain(args) -> int:
    from ..explain import explain_run
    from ..runs import load
    from .explore import check_grid_size

    check_grid_size(
        args.dims * args.steps, f"explain --dims {args.dims} --steps {args.steps}", "ask for fewer"
    )
    run = load(args.run_dir, device=device(args.device))
    out = Path(args.out) if args.out else run.run_dir
    report = explain_run(run, out, dims=args.dims, steps=args.steps, n=args.n, seed=args.seed)
    for path in report.written:
        print(f"wrote {path}")
    print(f"explained in {report.seconds:.1f} s")
    return 0


def cmd_export(args) -> int:
    from ..export import export_onnx
    from ..runs import load

    run = load(args.run_dir)
    written = export_onnx(run, args.out, opset=args.opset)
    for path in written:
        print(f"wrote {path}")
    return 0
