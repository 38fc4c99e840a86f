"""Datasets and input pipelines, for any modality.

Bundled datasets built offline by TFDS builders (`mnist5k`, `digits`, `bbc_news`, and the
generated image-caption set `shapes`),
public TFDS datasets read once prepared as ArrayRecord, a user's own files (`image_folder`,
`text_files`; `open_split` opens whichever a config names), grain training iterators with
host-side record transforms whose state is checkpointed with the model, streamed
evaluation batches, and global-array assembly for multi-host.
"""

from ssljax.data.bundled import BUNDLED_BUILDERS, Digits, Mnist5k
from ssljax.data.config_sources import OWN_FORMATS, dataset_info, open_split
from ssljax.data.global_arrays import to_global
from ssljax.data.image_folder import NoLabelsError, UnreadableImageError
from ssljax.data.image_folder import decode as decode_image
from ssljax.data.pipeline import (
    eval_batches,
    example_batch,
    image_example,
    prepare_image,
    iterator_state,
    resize_and_center_crop,
    restore_iterator_state,
    train_iterator,
)
from ssljax.data.sources import (
    ArraySource,
    DatasetNotAvailableError,
    DatasetInfo,
    ImageLabelSource,
    in_memory,
    read_all,
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
    "DatasetInfo",
    "ImageLabelSource",
    "Mnist5k",
    "NoLabelsError",
    "OWN_FORMATS",
    "UnreadableImageError",
    "dataset_info",
    "decode_image",
    "eval_batches",
    "example_batch",
    "image_example",
    "in_memory",
    "info",
    "iterator_state",
    "load",
    "load_numpy",
    "open_split",
    "prepare_image",
    "read_all",
    "resize_and_center_crop",
    "resolve_data_dir",
    "restore_iterator_state",
    "to_global",
    "train_iterator",
]
