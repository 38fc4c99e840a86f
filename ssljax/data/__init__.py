"""Datasets and input pipelines.

Bundled datasets built offline by TFDS builders (`mnist5k`, `digits`), public
TFDS datasets read once prepared as ArrayRecord, grain training iterators whose
state is checkpointed with the model, and global-array assembly for multi-host.
"""

from ssljax.data.bundled import BUNDLED_BUILDERS, Digits, Mnist5k
from ssljax.data.global_arrays import to_global
from ssljax.data.pipeline import (
    eval_batches,
    iterator_state,
    resize_and_center_crop,
    restore_iterator_state,
    train_iterator,
)
from ssljax.data.sources import (
    ArraySource,
    DatasetNotAvailableError,
    ImageDatasetInfo,
    ImageLabelSource,
    in_memory,
    info,
    load,
    load_numpy,
    resolve_data_dir,
)

__all__ = [
    "ArraySource",
    "BUNDLED_BUILDERS",
    "DatasetNotAvailableError",
    "Digits",
    "ImageDatasetInfo",
    "ImageLabelSource",
    "Mnist5k",
    "eval_batches",
    "in_memory",
    "info",
    "iterator_state",
    "load",
    "load_numpy",
    "resize_and_center_crop",
    "resolve_data_dir",
    "restore_iterator_state",
    "to_global",
    "train_iterator",
]
