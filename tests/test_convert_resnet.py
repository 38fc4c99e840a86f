"""torchvision's ResNet weights as an ssljax image run (`ssljax import FILE.safetensors`,
`ssljax.convert.resnet`).

torchvision cannot be installed beside this torch, so the reference is written here from its
structure: torchvision/models/resnet.py (`BasicBlock`, `Bottleneck`, `ResNet`, `_make_layer`),
which follows He et al. 2015 (arXiv 1512.03385) with the stride of each bottleneck on its 3x3
convolution ("ResNet v1.5"). The modules carry torchvision's names, so `state_dict()` has its
keys. Weights are random, and the BatchNorms' affine parameters and running statistics too (the
statistics are a batch's, then scaled and shifted at random, so neither is 0/1 and a statistic
mapped to the wrong place shows). The imported run must give the reference's pooled features in
float32 on the same images.
"""

from __future__ import annotations

import functools
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")
safetensors_torch = pytest.importorskip("safetensors.torch")

from helpers import run_cli  # noqa: E402
from ssljax import convert, models, objectives  # noqa: E402
from ssljax.convert import resnet  # noqa: E402
from ssljax.convert.hf_files import ConversionError  # noqa: E402
from ssljax.data import pipeline  # noqa: E402
from ssljax.evaluate import features as features_lib  # noqa: E402
from ssljax.evaluate import linear_probe  # noqa: E402
from ssljax.train import defaults  # noqa: E402

nn = torch.nn


class TorchBasicBlock(nn.Module):
  """torchvision's BasicBlock: 3x3 (stride) -> BN -> ReLU -> 3x3 -> BN, + shortcut, ReLU."""

  expansion = 1

  def __init__(self, inplanes, planes, stride=1, downsample=None):
    super().__init__()
    self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, padding=1, bias=False)
    self.bn1 = nn.BatchNorm2d(planes)
    self.conv2 = nn.Conv2d(planes, planes, 3, 1, padding=1, bias=False)
    self.bn2 = nn.BatchNorm2d(planes)
    self.relu = nn.ReLU()
    self.downsample = downsample

  def forward(self, x):
    identity = x if self.downsample is None else self.downsample(x)
    out = self.relu(self.bn1(self.conv1(x)))
    return self.relu(self.bn2(self.conv2(out)) + identity)


class TorchBottleneck(nn.Module):
  """torchvision's Bottleneck (v1.5): 1x1 -> 3x3 (stride) -> 1x1 (4x planes), + shortcut, ReLU."""

  expansion = 4

  def __init__(self, inplanes, planes, stride=1, downsample=None):
    super().__init__()
    self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
    self.bn1 = nn.BatchNorm2d(planes)
    self.conv2 = nn.Conv2d(planes, planes, 3, stride, padding=1, bias=False)
    self.bn2 = nn.BatchNorm2d(planes)
    self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
    self.bn3 = nn.BatchNorm2d(planes * 4)
    self.relu = nn.ReLU()
    self.downsample = downsample

  def forward(self, x):
    identity = x if self.downsample is None else self.downsample(x)
    out = self.relu(self.bn1(self.conv1(x)))
    out = self.relu(self.bn2(self.conv2(out)))
    return self.relu(self.bn3(self.conv3(out)) + identity)


class TorchResNet(nn.Module):
  """torchvision's ResNet: 7x7/2 conv (padding 3) -> BN -> ReLU -> 3x3/2 max pool (padding 1)
  -> 4 stages (each after the first starts with stride 2; a conv1x1(stride) + BN shortcut where
  the shape changes) -> global average pool -> fc."""

  def __init__(self, block, layers, width=64, num_classes=1000):
    super().__init__()
    self.inplanes = width
    self.conv1 = nn.Conv2d(3, width, 7, 2, padding=3, bias=False)
    self.bn1 = nn.BatchNorm2d(width)
    self.relu = nn.ReLU()
    self.maxpool = nn.MaxPool2d(3, 2, padding=1)
    self.layer1 = self._make_layer(block, width, layers[0])
    self.layer2 = self._make_layer(block, width * 2, layers[1], stride=2)
    self.layer3 = self._make_layer(block, width * 4, layers[2], stride=2)
    self.layer4 = self._make_layer(block, width * 8, layers[3], stride=2)
    self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
    self.fc = nn.Linear(width * 8 * block.expansion, num_classes)

  def _make_layer(self, block, planes, blocks, stride=1):
    downsample = None
    if stride != 1 or self.inplanes != planes * block.expansion:
      downsample = nn.Sequential(nn.Conv2d(self.inplanes, planes * block.expansion, 1, stride, bias=False),
                                 nn.BatchNorm2d(planes * block.expansion))
    layers = [block(self.inplanes, planes, stride, downsample)]
    self.inplanes = planes * block.expansion
    layers += [block(self.inplanes, planes) for _ in range(1, blocks)]
    return nn.Sequential(*layers)

  def features(self, x):
    x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
    x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
    return torch.flatten(self.avgpool(x), 1)  # the input of fc

  def forward(self, x):
    return self.fc(self.features(x))


def to_torch_input(images: np.ndarray):
  """uint8 (B, H, W, 3) -> torchvision's input: [0, 1], normalised by ImageNet's mean and std, NCHW."""
  x = torch.from_numpy(images.astype(np.float32) / 255.0).permute(0, 3, 1, 2)
  mean = torch.tensor(resnet.IMAGENET_MEAN).view(1, 3, 1, 1)
  std = torch.tensor(resnet.IMAGENET_STD).view(1, 3, 1, 1)
  return (x - mean) / std


def random_images(n: int, size: int, seed: int = 0) -> np.ndarray:
  return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


def reference(block, layers, width=64, num_classes=1000, seed=0):
  """A torchvision-structured ResNet with random weights and random BatchNorm statistics, in
  inference mode."""
  torch.manual_seed(seed)
  model = TorchResNet(block, layers, width, num_classes)
  norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
  with torch.no_grad():
    for bn in norms:
      bn.weight.uniform_(0.5, 1.5)
      bn.bias.normal_(0.0, 0.2)
      bn.momentum = None  # the cumulative average: one batch's statistics exactly
    model.train()
    model(to_torch_input(random_images(8, 64, seed=seed + 1)))
    for bn in norms:
      bn.running_mean.add_(torch.randn_like(bn.running_mean) * 0.2 * bn.running_var.sqrt())
      bn.running_var.mul_(torch.empty_like(bn.running_var).uniform_(0.5, 2.0))
      bn.momentum = 0.1
  return model.eval()


def torch_features(model, images: np.ndarray) -> np.ndarray:
  with torch.no_grad():
    return model.features(to_torch_input(images)).numpy()


def save(model, path: str) -> str:
  safetensors_torch.save_file(model.state_dict(), path)
  return path


def assert_close(ours, theirs, rtol=1e-4):
  """Within `rtol` of the reference's largest magnitude."""
  ours, theirs = np.asarray(ours), np.asarray(theirs)
  assert ours.shape == theirs.shape
  scale = np.abs(theirs).max()
  assert scale > 0
  error = np.abs(ours - theirs).max()
  assert error <= rtol * scale, f"largest difference {error:.3g} against largest value {scale:.3g}"


def float32_config(spec: str, **model):
  config = defaults.load_config(spec)
  with config.unlocked():
    config.model.dtype = "float32"
    config.data.image_size = 64
    for key, value in model.items():
      config.model[key] = value
  return config


@pytest.fixture(scope="module")
def resnet50_file(tmp_path_factory):
  model = reference(TorchBottleneck, [3, 4, 6, 3])
  path = save(model, str(tmp_path_factory.mktemp("resnet50") / "resnet50.safetensors"))
  return model, path


def test_resnet50_features_are_torchvisions(resnet50_file):
  """A ResNet-50 imported as a supervised run: its `features` (2048-d, pooled, before fc) are
  the reference's on the same 64 px images (even at every stride-2 layer, where Flax's SAME
  padding would differ)."""
  model, path = resnet50_file
  imported = convert.import_checkpoint(path, float32_config("supervised:imagenet"))
  m = imported.config.model
  assert (m.encoder, m.width, m.stem, m.padding) == ("resnet50", 64, "imagenet", "symmetric")
  assert tuple(m.pixel_mean) == resnet.IMAGENET_MEAN and tuple(m.pixel_std) == resnet.IMAGENET_STD
  assert imported.config.imported_from == f"torchvision resnet50 {os.path.abspath(path)}"
  assert imported.tokenizer is None
  assert any("fc (1000 classes) is not imported" in note for note in imported.notes)
  assert any("head initialised afresh" in note for note in imported.notes)
  stats = imported.model_state["batch_stats"]["encoder"]
  np.testing.assert_array_equal(stats["BottleneckBlock_3"]["shortcut_norm"]["var"],
                                model.layer2[0].downsample[1].running_var.numpy())
  np.testing.assert_array_equal(imported.params["encoder"]["stem_conv"]["kernel"],
                                model.conv1.weight.detach().numpy().transpose(2, 3, 1, 0))

  objective = objectives.build(imported.config)
  images = random_images(4, 64, seed=3)
  ours = jax.jit(objective.features)(imported.params, imported.model_state, {"image": jnp.asarray(images)})
  assert ours.shape == (4, 2048)
  assert_close(ours, torch_features(model, images))


@pytest.mark.parametrize("block,size", [(TorchBottleneck, 65), (TorchBasicBlock, 64)])
def test_small_resnets_are_torchvisions(tmp_path, block, size):
  """One block per stage, width 8: bottleneck blocks on 65 px (odd maps at every stride-2 layer)
  and basic blocks on 64 px (even ones), where Flax's SAME padding is shown to differ. The rules
  read back what they write (export then import) exactly."""
  model = reference(block, [1, 1, 1, 1], width=8, num_classes=10, seed=1)
  tensors = resnet.open_tensors(save(model, str(tmp_path / "small.safetensors")))
  structure = resnet.describe(tensors)
  bottleneck = block is TorchBottleneck
  assert structure == resnet.Structure((1, 1, 1, 1), bottleneck, 8, 10) and structure.encoder is None
  variables = resnet.load_variables(tensors, structure)
  net = models.ResNet(stage_sizes=(1, 1, 1, 1), block_cls=models.BottleneckBlock if bottleneck else models.BasicBlock,
                      width=8, stem="imagenet", padding="symmetric", pixel_mean=resnet.IMAGENET_MEAN,
                      pixel_std=resnet.IMAGENET_STD)
  images = random_images(3, size, seed=4)
  x = jnp.asarray(images, jnp.float32) / 255.0
  theirs = torch_features(model, images)
  assert_close(net.apply(variables, x, train=False), theirs)
  if size % 2 == 0:
    same = np.asarray(net.clone(padding="same").apply(variables, x, train=False))
    assert np.abs(same - theirs).max() > 1e-2 * np.abs(theirs).max()

  state = {k: v.numpy() for k, v in model.state_dict().items()
           if not k.endswith("num_batches_tracked") and not k.startswith("fc.")}
  exported = resnet.export_tensors(variables, structure)
  assert sorted(exported) == sorted(state)
  for name, array in exported.items():
    np.testing.assert_array_equal(array, state[name], err_msg=name)


@pytest.fixture(scope="module")
def resnet18_file(tmp_path_factory):
  """A ResNet-18 of width 8: the real layout at a cost a CLI test can pay."""
  model = reference(TorchBasicBlock, [2, 2, 2, 2], width=8, num_classes=5, seed=2)
  return model, save(model, str(tmp_path_factory.mktemp("resnet18") / "resnet18.safetensors"))


def _damaged(tmp_path, source: str, edit) -> str:
  from safetensors.numpy import load_file, save_file

  tensors = load_file(source)
  edit(tensors)
  path = str(tmp_path / "damaged.safetensors")
  save_file(tensors, path)
  return path


@pytest.mark.parametrize("edit,message", [
    (lambda t: t.pop("layer2.0.bn2.running_var"),
     "has no tensor 'layer2.0.bn2.running_var', which a torchvision resnet18 of width 8 has"),
    (lambda t: t.update({"layer3.1.conv1.weight": t["layer3.1.conv1.weight"][:, :, :1, :1].copy()}),
     r"tensor 'layer3.1.conv1.weight' of .* has shape \(32, 32, 1, 1\); "
     r"a torchvision resnet18 of width 8 has \(32, 32, 3, 3\)"),
    (lambda t: t.update({"layer1.0.se.weight": np.zeros(3, np.float32)}),
     "1 tensors that .* does not have, e.g. layer1.0.se.weight"),
    (lambda t: t.pop("conv1.weight"), "no tensor 'conv1.weight': it is not a torchvision"),
    (lambda t: [t.pop(k) for k in list(t) if k.startswith("layer4.1.")],
     r"blocks \[2, 2, 2, 1\].*; ssljax's ResNets are resnet18"),
])
def test_bad_state_dicts_are_named(tmp_path, resnet18_file, edit, message):
  path = _damaged(tmp_path, resnet18_file[1], edit)
  with pytest.raises(ConversionError, match=message) as error:
    convert.import_checkpoint(path, float32_config("simclr:imagenet"))
  assert "\n" not in str(error.value)


def test_what_imports_as_a_state_dict(tmp_path, resnet18_file):
  """A .safetensors file; a directory with model.safetensors and no config.json, or timm's
  config.json (whose pretrained_cfg's mean and std are kept); not a Hugging Face directory."""
  import json
  import shutil

  _, path = resnet18_file
  assert resnet.is_state_dict(path) and not resnet.is_state_dict(str(tmp_path / "absent.safetensors"))
  bare, timm, hf = (tmp_path / name for name in ("bare", "timm", "hf"))
  for directory in (bare, timm, hf):
    directory.mkdir()
    shutil.copy(path, directory / "model.safetensors")
  (timm / "config.json").write_text(json.dumps({"architecture": "resnet18", "pretrained_cfg": {
      "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]}}))
  (hf / "config.json").write_text(json.dumps({"architectures": ["ResNetForImageClassification"]}))
  assert resnet.is_state_dict(str(bare)) and resnet.is_state_dict(str(timm)) and not resnet.is_state_dict(str(hf))
  config = resnet.imported_config(str(bare), defaults.load_config("vicreg:imagenet"))
  assert (config.model.encoder, config.model.width, tuple(config.model.pixel_mean)) == ("resnet18", 8,
                                                                                      resnet.IMAGENET_MEAN)
  config = resnet.imported_config(str(timm))
  assert config.objective == "supervised" and tuple(config.model.pixel_std) == (0.25, 0.25, 0.25)


def test_config_must_describe_the_file(resnet18_file):
  config = float32_config("simclr:mnist5k", encoder="resnet18", width=8)
  with pytest.raises(ConversionError, match=r"model.stem='small' \(the file's: 'imagenet'\); model.padding='same' "
                                            r"\(the file's: 'symmetric'\); model.pixel_mean is unset"):
    resnet.import_resnet(resnet18_file[1], config)
  with pytest.raises(ConversionError, match="keeps no ResNet at params"):
    resnet.import_resnet(resnet18_file[1], resnet.imported_config(resnet18_file[1], defaults.load_config("clip:smoke")))


@pytest.mark.slow  # the import's numbers are checked in-process in this file: ~30 s
def test_import_command_and_evaluation(tmp_path, data_dir, resnet18_file):
  """`ssljax import FILE.safetensors --config configs/byol.py:imagenet` writes a run whose
  restored encoder (and BYOL's target, which starts as its copy) is the file's, and extracts the
  reference's features from records as `ssljax eval` streams them (resized and centre-cropped);
  a linear probe fits on them."""
  model, path = resnet18_file
  workdir = str(tmp_path / "run")
  result = run_cli(["import", path, "--workdir", workdir, "--config", "configs/byol.py:imagenet",
                    "--config.model.dtype=float32", "--config.data.image_size=48"], data_dir, devices=1)
  assert result.returncode == 0, result.stderr[-2000:]
  assert f"imported torchvision resnet18 {path} as a byol run" in result.stdout
  assert "fc (5 classes) is not imported; the predictor and projector initialised afresh (seed 0)" in result.stdout
  assert sorted(os.listdir(workdir)) == ["checkpoints", "config.json"]

  objective, params, model_state = objectives.restore_model(workdir)
  np.testing.assert_array_equal(params["encoder"]["BasicBlock_4"]["shortcut_conv"]["kernel"],
                                model.layer3[0].downsample[0].weight.detach().numpy().transpose(2, 3, 1, 0))
  target = model_state["target"]
  jax.tree.map(np.testing.assert_array_equal, target["params"]["encoder"], params["encoder"])
  jax.tree.map(np.testing.assert_array_equal, target["batch_stats"]["encoder"], model_state["batch_stats"]["encoder"])
  rng = np.random.default_rng(5)
  labels = np.arange(24) % 3
  # Three classes of 56 px images told apart by their colour; eval resizes them to 48 px.
  records = [{"image": np.clip(rng.normal(80 * c + 40, 30, (56, 56, 3)), 0, 255).astype(np.uint8), "label": c}
             for c in labels]
  record_fn = functools.partial(pipeline.image_example, image_size=48)
  feats, got_labels = features_lib.extract(functools.partial(objective.features, params, model_state), records,
                                           record_fn, batch_size=16)
  assert feats.shape == (24, 64) and list(got_labels) == list(labels)
  images = np.stack([record_fn(r)["image"] for r in records])
  assert_close(feats, torch_features(model, images))
  accuracy = linear_probe.accuracy(feats[::2], labels[::2], feats[1::2], labels[1::2], num_classes=3, max_steps=100)
  assert accuracy > 0.9
