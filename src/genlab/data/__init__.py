"""Datasets as uint8 tensors in memory (`load_dataset`) and device-resident minibatches (`DeviceBatches`)."""

from .batching import DeviceBatches
from .download import data_dir
from .sources import ImageDataset, list_datasets, load_dataset

__all__ = ["DeviceBatches", "ImageDataset", "data_dir", "list_datasets", "load_dataset"]
