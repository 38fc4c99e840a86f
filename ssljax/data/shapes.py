"""`shapes`: a generated image-caption dataset for CLIP, drawn with numpy, with shape-colour
combinations that training never shows.

Every image is 32 x 32 RGB uint8 on a plain grey background and holds one object (the
*primary*) described by four attributes:

  shape     circle, square, triangle, cross, diamond
  colour    red, green, blue, yellow, purple (the palette colour, each channel moved by up to
            +-20 per object, so colour names cover a small range of RGB values)
  size      small (radius 4 px) or large (radius 8 px)
  position  top left, top right, bottom left, bottom right, centre (moved by up to +-1.5 px)

When the primary object is large and in a corner, half of the images also hold a small second
object of another shape and another colour in one of the other corners; the two never touch.
Its caption names the primary object first, then the second one. Captions are written from the
attributes with one of several templates ("a small red circle in the top left", "there is a
large blue square at the bottom right", ...), so the text tower must learn what the words mean,
not one fixed sentence per scene.

Held-out combinations. Five shape-colour pairs (`HELD_OUT`, one per shape and one per colour)
never appear in `train`, `validation` or `test`, neither as the primary nor as the second
object; `test_heldout` consists of images whose primary object is one of them (its second
objects are seen pairs). Zero-shot classification on `test_heldout` therefore asks whether the
model composes "blue" and "circle" although it never saw a blue circle, the compositional test
of Radford et al. 2021 (arXiv 2103.00020, Section 3.1) in miniature.

Determinism: example `i` of split `s` is drawn from `np.random.default_rng((SEED, s, i))`, so
it does not depend on which other examples are drawn or in which order.

Features: `image` uint8 (32, 32, 3) (a Tensor: encoding PNGs in TFDS needs TensorFlow),
`caption` (text), `scene` (the caption in the first template, for retrieval: two captions that
describe the same scene in other words have the same `scene`), the primary object's `shape`,
`colour`, `size` and `position` (ClassLabels) and `has_second` (bool). There is no `label`
feature and no supervised keys, so `ssljax.data.load` returns the records unchanged.

Splits: train 10,000; validation 1,000; test 1,000 (seen combinations); test_heldout 1,000.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np
import tensorflow_datasets as tfds
from etils import epath

SEED = 20210226  # CLIP's arXiv submission date
IMAGE_SIZE = 32
SHAPES = ("circle", "square", "triangle", "cross", "diamond")
COLOURS = ("red", "green", "blue", "yellow", "purple")
SIZES = ("small", "large")
POSITIONS = ("top left", "top right", "bottom left", "bottom right", "centre")
PALETTE = {
    "red": (215, 45, 40),
    "green": (40, 175, 65),
    "blue": (40, 90, 230),
    "yellow": (235, 210, 40),
    "purple": (150, 60, 205),
}
COLOUR_JITTER = 20  # per channel, per object
RADIUS = {"small": 5.0, "large": 8.0}
POSITION_JITTER = 1.0  # pixels, each axis
# Centres of the positions as fractions of the side (row, column).
POSITION_CENTRES = {
    "top left": (0.25, 0.25),
    "top right": (0.25, 0.75),
    "bottom left": (0.75, 0.25),
    "bottom right": (0.75, 0.75),
    "centre": (0.5, 0.5),
}
CORNERS = POSITIONS[:4]
BACKGROUND_LEVELS = (10, 70)  # the grey background's value, drawn per image
SECOND_OBJECT_P = 0.5  # when the primary object is large and in a corner
# One per shape and one per colour, so every word is still seen in training, in other pairs.
HELD_OUT = (
    ("circle", "blue"),
    ("square", "yellow"),
    ("triangle", "purple"),
    ("cross", "red"),
    ("diamond", "green"),
)
SEEN = tuple((s, c) for s in SHAPES for c in COLOURS if (s, c) not in HELD_OUT)
SPLIT_SIZES = {"train": 10_000, "validation": 1_000, "test": 1_000, "test_heldout": 1_000}
SPLIT_IDS = {name: i for i, name in enumerate(SPLIT_SIZES)}

# Caption templates: {size} {colour} {shape} and a position phrase, the primary object first.
TEMPLATES = (
    "a {size} {colour} {shape} {where}",
    "there is a {size} {colour} {shape} {where}",
    "{where}, a {size} {colour} {shape}",
    "a picture of a {colour} {shape}, {size}, {where}",
    "the image shows a {size} {colour} {shape} {where}",
)
SECOND_TEMPLATES = (
    " and a {size} {colour} {shape} {where}",
    ", with a {size} {colour} {shape} {where}",
)


# --- drawing ---------------------------------------------------------------------------------


def shape_mask(shape: str, centre: tuple[float, float], radius: float, side: int = IMAGE_SIZE) -> np.ndarray:
  """(side, side) bool: the pixels whose centres fall inside `shape` of `radius` at `centre`.

  Every shape is centred on `centre` (its centroid), so an object's pixel centroid tells its
  position: the triangle is equilateral and inscribed in the circle of `radius`, whose centre
  is also its centroid.
  """
  rows, cols = np.mgrid[0:side, 0:side].astype(np.float32)  # pixel centres
  dy, dx = rows - centre[0], cols - centre[1]
  if shape == "circle":
    return dy**2 + dx**2 <= radius**2
  if shape == "square":
    half = 0.85 * radius
    return (np.abs(dy) <= half) & (np.abs(dx) <= half)
  if shape == "triangle":
    # Apex up at -r, base at +r/2, half-width growing linearly to r * sqrt(3)/2 at the base.
    height = 1.5 * radius
    half_width = (dy + radius) / height * (radius * math.sqrt(3) / 2)
    return (dy >= -radius) & (dy <= radius / 2) & (np.abs(dx) <= half_width)
  if shape == "cross":
    arm = radius / 3
    return ((np.abs(dy) <= arm) & (np.abs(dx) <= radius)) | ((np.abs(dx) <= arm) & (np.abs(dy) <= radius))
  if shape == "diamond":
    return np.abs(dy) + np.abs(dx) <= radius
  raise ValueError(f"unknown shape {shape!r}; choose one of {SHAPES}")


def object_centre(position: str, radius: float, rng: np.random.Generator,
                  side: int = IMAGE_SIZE) -> tuple[float, float]:
  """The position's centre moved by up to POSITION_JITTER, kept so the object stays inside."""
  frac = POSITION_CENTRES[position]
  centre = []
  for f in frac:
    c = f * side - 0.5 + rng.uniform(-POSITION_JITTER, POSITION_JITTER)
    centre.append(float(np.clip(c, radius, side - 1 - radius)))
  return centre[0], centre[1]


def object_colour(colour: str, rng: np.random.Generator) -> np.ndarray:
  """(3,) uint8: the palette colour with each channel moved by up to COLOUR_JITTER."""
  jitter = rng.integers(-COLOUR_JITTER, COLOUR_JITTER + 1, size=3)
  return np.clip(np.asarray(PALETTE[colour]) + jitter, 0, 255).astype(np.uint8)


def draw(objects: list[dict], background: int, rng: np.random.Generator,
         side: int = IMAGE_SIZE) -> np.ndarray:
  """(side, side, 3) uint8: a grey background with `objects` painted in order, each a dict
  of shape, colour, size and position."""
  image = np.full((side, side, 3), background, np.uint8)
  for obj in objects:
    radius = RADIUS[obj["size"]]
    mask = shape_mask(obj["shape"], object_centre(obj["position"], radius, rng, side), radius, side)
    image[mask] = object_colour(obj["colour"], rng)
  return image


# --- captions --------------------------------------------------------------------------------


def where(position: str) -> str:
  """The position as a phrase after the object: "in the top left", "at the bottom right"."""
  if position == "centre":
    return "in the centre"
  return ("in the " if position.startswith("top") else "at the ") + position


def describe(obj: dict, template: str) -> str:
  phrase = where(obj["position"])
  return template.format(size=obj["size"], colour=obj["colour"], shape=obj["shape"], where=phrase)


def caption(objects: list[dict], template: int, second_template: int = 0) -> str:
  """The caption of a scene: the primary object in TEMPLATES[template], then the second
  object (if any) in SECOND_TEMPLATES[second_template]."""
  text = describe(objects[0], TEMPLATES[template])
  for obj in objects[1:]:
    text += describe(obj, SECOND_TEMPLATES[second_template])
  return text


# --- examples --------------------------------------------------------------------------------


def _pick(rng: np.random.Generator, options):
  return options[int(rng.integers(len(options)))]


def scene_objects(split: str, rng: np.random.Generator) -> list[dict]:
  """The objects of one scene: the primary object's shape-colour pair from the split's pool
  (held-out pairs only in test_heldout, never elsewhere), and maybe a small second object of a
  seen pair with another shape and colour, in a corner the primary object leaves free."""
  shape, colour = _pick(rng, HELD_OUT if split == "test_heldout" else SEEN)
  primary = {"shape": shape, "colour": colour, "size": _pick(rng, SIZES), "position": _pick(rng, POSITIONS)}
  objects = [primary]
  in_corner = primary["size"] == "large" and primary["position"] in CORNERS
  if in_corner and rng.uniform() < SECOND_OBJECT_P:
    pairs = [(s, c) for s, c in SEEN if s != shape and c != colour]
    second_shape, second_colour = _pick(rng, pairs)
    free = [p for p in CORNERS if p != primary["position"]]
    objects.append({"shape": second_shape, "colour": second_colour, "size": "small",
                    "position": _pick(rng, free)})
  return objects


def example(split: str, index: int) -> dict:
  """Example `index` of `split`, drawn from its own generator (module docstring)."""
  if split not in SPLIT_IDS:
    raise ValueError(f"unknown split {split!r}; choose one of {tuple(SPLIT_IDS)}")
  rng = np.random.default_rng((SEED, SPLIT_IDS[split], index))
  objects = scene_objects(split, rng)
  background = int(rng.integers(BACKGROUND_LEVELS[0], BACKGROUND_LEVELS[1] + 1))
  image = draw(objects, background, rng)
  template, second_template = int(rng.integers(len(TEMPLATES))), int(rng.integers(len(SECOND_TEMPLATES)))
  primary = objects[0]
  return {
      "image": image,
      "caption": caption(objects, template, second_template),
      "scene": caption(objects, 0, 0),
      "shape": primary["shape"],
      "colour": primary["colour"],
      "size": primary["size"],
      "position": primary["position"],
      "has_second": len(objects) > 1,
  }


def _examples(split: str, count: int) -> Iterator[tuple[int, dict]]:
  for index in range(count):
    yield index, example(split, index)


class Shapes(tfds.core.GeneratorBasedBuilder):
  """Generated 32x32 images of coloured shapes with captions; 5 shape-colour pairs held out."""

  name = "shapes"
  # TFDS 4.9.10 derives code_path via the `importlib_resources` backport, which
  # it does not install; this is the path it would compute.
  code_path = epath.Path(__file__)
  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self,
        description=(
            "Generated image-caption pairs for CLIP: 32x32 RGB images of a circle, square, "
            "triangle, cross or diamond in red, green, blue, yellow or purple, small or large, "
            "in one of five positions, sometimes with a small second object; captions from "
            "several templates. Five shape-colour pairs never occur in train, validation or "
            "test; test_heldout holds only them. Drawn with numpy from a fixed seed (see "
            "ssljax/data/shapes.py)."),
        features=tfds.features.FeaturesDict({
            "image": tfds.features.Tensor(shape=(IMAGE_SIZE, IMAGE_SIZE, 3), dtype=np.uint8),
            "caption": tfds.features.Text(),
            "scene": tfds.features.Text(),
            "shape": tfds.features.ClassLabel(names=list(SHAPES)),
            "colour": tfds.features.ClassLabel(names=list(COLOURS)),
            "size": tfds.features.ClassLabel(names=list(SIZES)),
            "position": tfds.features.ClassLabel(names=list(POSITIONS)),
            "has_second": tfds.features.Scalar(dtype=np.bool_),
        }),
        # Stored in generation order; grain shuffles at read time.
        disable_shuffling=True,
        citation=r"""@inproceedings{radford2021clip,
  title={Learning Transferable Visual Models From Natural Language Supervision},
  author={Radford, Alec and Kim, Jong Wook and Hallacy, Chris and Ramesh, Aditya and Goh,
          Gabriel and Agarwal, Sandhini and Sastry, Girish and Askell, Amanda and Mishkin,
          Pamela and Clark, Jack and Krueger, Gretchen and Sutskever, Ilya},
  booktitle={ICML}, year={2021}, note={arXiv:2103.00020}}""",
    )

  def _split_generators(self, dl_manager):
    del dl_manager  # nothing to download: every image is drawn here
    return {split: self._generate_examples(split, count) for split, count in SPLIT_SIZES.items()}

  def _generate_examples(self, split, count):
    yield from _examples(split, count)
