"""On-device image augmentations (dm-pix + jax.image) and pretext-task transforms.

Per-example ops are `fn(key, image, ...) -> image` on float32 (H, W, C) images in [0, 1], C = 1
or 3; `view` chains them as SimCLR does and `views` vmaps that over a batch with one key per
example and view. Knobs live in `default_config()`.
"""

from ssljax.augment.config import AugmentConfig, crop_and_flip, default_config, make_config
from ssljax.augment.ops import (
    LUMA_WEIGHTS,
    apply_with_probability,
    blur_kernel_size,
    crop_and_resize,
    cutout_side,
    gaussian_blur,
    random_color_jitter,
    random_cutout,
    random_flip,
    random_gaussian_blur,
    random_gaussian_noise,
    random_grayscale,
    random_resized_crop,
    random_rotate90,
    random_sobel,
    random_solarize,
    example_keys,
    sample_crop_box,
    sobel,
    to_float_image,
    to_grayscale,
)
from ssljax.augment.pipeline import multi_crop, view, views
from ssljax.augment.pretext import (
    NEIGHBOUR_OFFSETS,
    patch_grid_extent,
    patch_pair,
    patch_pairs,
    rotations,
)

__all__ = [
    "AugmentConfig",
    "LUMA_WEIGHTS",
    "NEIGHBOUR_OFFSETS",
    "apply_with_probability",
    "blur_kernel_size",
    "crop_and_resize",
    "cutout_side",
    "crop_and_flip",
    "default_config",
    "gaussian_blur",
    "make_config",
    "multi_crop",
    "patch_grid_extent",
    "patch_pair",
    "patch_pairs",
    "random_color_jitter",
    "random_cutout",
    "random_flip",
    "random_gaussian_blur",
    "random_gaussian_noise",
    "random_grayscale",
    "random_resized_crop",
    "random_rotate90",
    "random_sobel",
    "random_solarize",
    "rotations",
    "example_keys",
    "sample_crop_box",
    "sobel",
    "to_float_image",
    "to_grayscale",
    "view",
    "views",
]
