"""Evaluation math: distribution distances, paired image quality, a domain classifier, memorization.

The Inception feature extractor lives in `genlab.metrics.inception` and is imported on demand (it is
heavy); everything here works on any features or images.
"""

from .classifier import (
    ClassifierConfig,
    DomainClassifier,
    accuracy,
    class_coverage,
    classifier_score,
    extract,
    train_classifier,
)
from .distribution import (
    feature_statistics,
    fid,
    frechet_distance,
    kid,
    precision_recall_density_coverage,
)
from .image_quality import mse, mse_per_image, psnr, psnr_per_image, ssim, ssim_per_image
from .memorization import memorization_report, nearest_neighbors

__all__ = [
    "ClassifierConfig",
    "DomainClassifier",
    "accuracy",
    "class_coverage",
    "classifier_score",
    "extract",
    "feature_statistics",
    "fid",
    "frechet_distance",
    "kid",
    "memorization_report",
    "mse",
    "mse_per_image",
    "nearest_neighbors",
    "precision_recall_density_coverage",
    "psnr",
    "psnr_per_image",
    "ssim",
    "ssim_per_image",
    "train_classifier",
]
