"""`genlab eval | train-classifier | compare`: honest numbers for trained runs."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from ..errors import ConfigError
from .common import add_sampling_option, apply_sampling, device, device_name, int_in, positive_int, seed_int

MAX_EVAL_SAMPLES = 200_000  # held in memory with their features; 10,000 is the usual FID size


def register(commands) -> None:
    # Names spelled out rather than imported: genlab.evaluation pulls in scipy, which every command
    # would then pay for at start-up. evaluate_run checks them (tests/test_cli.py keeps them in step).
    evaluate = commands.add_parser(
        "eval", help="FID, KID, precision/recall, coverage, likelihood...: eval.json + eval.md in the run dir"
    )
    evaluate.add_argument("run_dir")
    evaluate.add_argument(
        "--n",
        type=int_in(1, MAX_EVAL_SAMPLES, "a positive integer"),
        default=10_000,
        help="samples (default 10000); test-split metrics use up to n",
    )
    evaluate.add_argument(
        "--metrics",
        nargs="+",
        metavar="METRIC",
        help="default: all that apply; any of fid, kid, prdc, classifier_score, class_coverage, "
        "label_accuracy, memorization, likelihood, reconstruction (space or comma separated)",
    )
    evaluate.add_argument(
        "--extractor", default="classifier", help="features for FID/KID/PRDC: classifier or inception"
    )
    evaluate.add_argument("--seed", type=seed_int, default=0)
    evaluate.add_argument(
        "--nll-k", type=positive_int, default=100, dest="nll_k", help="importance samples for the VAE NLL"
    )
    evaluate.add_argument("--device", type=device_name, default="auto")
    evaluate.add_argument("--out", help="folder for eval.json, eval.md and PNGs (default: the run dir)")
    evaluate.add_argument("--json", action="store_true", help="print eval.json instead of the table")
    add_sampling_option(evaluate)

    evaluate.set_defaults(handler=cmd_eval)

    classifier = commands.add_parser(
        "train-classifier", help="train (or show) the domain classifier that eval uses for a dataset"
    )
    classifier.add_argument("--data", default="mnist-5k", help="dataset (default mnist-5k)")
    classifier.add_argument("--retrain", action="store_true", help="train again even if one is cached")
    classifier.add_argument("--device", type=device_name, default="cpu")

    classifier.set_defaults(handler=cmd_train_classifier)

    compare = commands.add_parser("compare", help="a table and a plot across runs, from their eval.json")
    compare.add_argument("run_dirs", nargs="+", metavar="RUN_DIR")
    compare.add_argument("--out", default="compare.png", help="the plot (default compare.png)")
    compare.add_argument("--json", action="store_true", help="print the rows as JSON instead of a table")
    compare.set_defaults(handler=cmd_compare)


def cmd_eval(args) -> int:
    from ..evaluation import evaluate_run, print_table, write_report
    from ..evaluation.extractors import EXTRACTORS
    from ..runs import load

    if args.extractor not in EXTRACTORS:
        raise ConfigError(f"unknown extractor {args.extractor!r}; choose one of: {', '.join(EXTRACTORS)}")
    metrics = [m.strip() for item in args.metrics or [] for m in item.split(",") if m.strip()] or None
    torch_device = device(args.device)
    run = apply_sampling(load(args.run_dir, device=torch_device), args.sampling)
    result = evaluate_run(
        run,
        n=args.n,
        metrics=metrics,
        extractor=args.extractor,
        seed=args.seed,
        nll_k=args.nll_k,
        device=torch_device,
        log=lambda text: print(text, file=sys.stderr),
    )
    written = write_report(result, Path(args.out) if args.out else run.run_dir)
    if args.json:
        print(written[0].read_text())
    else:
        print_table(result)
        print(f"wrote {', '.join(str(p) for p in written[:2])} and {len(written) - 2} PNG(s)")
    return 0


def cmd_train_classifier(args) -> int:
    from ..evaluation.extractors import get_classifier

    classifier = get_classifier(
        args.data,
        device=device(args.device),
        retrain=args.retrain,
        log=lambda text: print(text, file=sys.stderr),
    )
    info = classifier.describe()
    print(
        f"domain classifier for {info['dataset']}: test accuracy {info['test_accuracy']:.4f}, "
        f"sha256 {info['sha256'][:12]}, in {info['path']}"
    )
    return 0


def cmd_compare(args) -> int:
    from ..evaluation import comparison_rows, plot_comparison, print_comparison

    rows, warnings = comparison_rows(args.run_dirs)
    for warning in warnings:
        print(f"genlab: warning: {warning}", file=sys.stderr)
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        print_comparison(rows)
    plot_comparison(rows, args.out)
    print(f"wrote {args.out}")
    return 0
