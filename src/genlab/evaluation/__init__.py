"""`genlab eval`: sample a trained run, measure it against real data, and write a report.

from genlab.evaluation import evaluate_run, write_report
result = evaluate_run(genlab.load("runs/vae"), n=10_000)   # FID, KID, PRDC, classes, NLL, ...
write_report(result, "runs/vae")                           # eval.json, eval.md, PNGs
"""

from .evaluate import METRICS, evaluate_run, quick_eval, sample_images
from .extractors import EXTRACTORS, ClassifierExtractor, FeatureExtractor, InceptionExtractor, get_classifier
from .report import comparison_rows, headline, plot_comparison, print_comparison, print_table, write_report

__all__ = [
    "EXTRACTORS",
    "METRICS",
    "ClassifierExtractor",
    "FeatureExtractor",
    "InceptionExtractor",
    "comparison_rows",
    "evaluate_run",
    "get_classifier",
    "headline",
    "plot_comparison",
    "print_comparison",
    "print_table",
    "quick_eval",
    "sample_images",
    "write_report",
]
