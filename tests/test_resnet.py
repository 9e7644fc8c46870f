"""The BiT-style ResNet (the ViT paper's convolutional baseline): its layout, presets, checks and cost."""

import json
import subprocess
import sys
from dataclasses import asdict

import numpy as np
import pytest
from helpers import assert_bit_identical, ctrl_c_at

import minivit
from minivit.checkpoint import load_checkpoint
from minivit.config import TrainConfig
from minivit.models.resnet import PRESETS, ResNet, ResNetConfig
from minivit.train import resume, train


def test_layout_names_and_shapes():
    model = ResNet(image_size=8, num_classes=3, width=4, blocks=(2, 1), groups=2)
    shapes = {name: p.shape for name, p in model.named_parameters()}
    assert shapes["root.weight"] == (3, 3, 3, 4) and "root.bias" not in shapes  # a GroupNorm follows every conv
    assert shapes["units.0.conv1.weight"] == (1, 1, 4, 4) and shapes["units.0.conv3.weight"] == (1, 1, 4, 16)
    assert shapes["units.0.shortcut.weight"] == (1, 1, 4, 16) and "units.1.shortcut.weight" not in shapes
    assert shapes["units.2.conv2.weight"] == (3, 3, 8, 8) and shapes["units.2.shortcut.weight"] == (1, 1, 16, 32)
    assert shapes["norm.weight"] == (32,) and shapes["head.weight"] == (32, 3)
    assert {name for name, p in model.named_parameters() if not p.decay} == {
        name for name in shapes if name.endswith("bias") or ".norm" in name or name.startswith("norm.")}  # fmt: skip
    images = np.random.default_rng(0).random((2, 8, 8, 3), dtype=np.float32)
    assert model.features(images).shape == (2, 32)
    logits = model(images)
    assert logits.dtype == np.float32 and not logits.any()  # the head starts at zero, as in BiT


def test_the_second_stage_halves_the_side():
    model = ResNet(image_size=8, num_classes=3, width=4, blocks=(1, 1, 1), groups=2)
    x = np.random.default_rng(0).random((1, 8, 8, 3), dtype=np.float32)
    x = model.root(x)
    sides = []
    for unit in model.units:
        x = unit(x)
        sides.append(x.shape[1:])
    assert sides == [(8, 8, 16), (4, 4, 32), (2, 2, 64)]


def test_presets_are_near_the_vits_in_parameters():
    counts = {name: sum(p.data.size for p in ResNet.from_preset(name).parameters()) for name in PRESETS}
    assert 0.4e6 < counts["mini"] < 0.6e6 and 1.6e6 < counts["tiny"] < 2.2e6, counts  # mini ViT 0.55 M, tiny 1.8 M


def test_flops_count_every_convolution_at_its_output_side():
    model = ResNet(image_size=8, num_classes=3, width=4, blocks=(1, 1), groups=2)
    by_hand = (8 * 8 * 9 * 3 * 4  # root
               + 8 * 8 * (4 * 4 + 9 * 4 * 4 + 4 * 16 + 4 * 16)  # unit 0 at 8×8: conv1, conv2, conv3, shortcut
               + 8 * 8 * 16 * 8 + 4 * 4 * (9 * 8 * 8 + 8 * 32 + 16 * 32)  # unit 1: conv1 at 8×8, the rest at 4×4
               + 32 * 3)  # fmt: skip  (the head)
    assert model.flops() == by_hand


def test_a_checkpoints_json_config_builds_the_same_model():
    config = ResNetConfig(width=8, blocks=(1, 2))
    again = ResNetConfig(**json.loads(json.dumps(asdict(config))))  # blocks come back as a list
    assert again == config and again.blocks == (1, 2)


@pytest.mark.parametrize("fields, message", [
    ({"width": 6, "groups": 4}, "width 6 is not divisible into 4 groups"),
    ({"blocks": ()}, "every stage's blocks must be >= 1"),
    ({"blocks": (1, 0)}, "every stage's blocks must be >= 1"),
    ({"image_size": 6, "blocks": (1, 1, 1)}, "does not halve 2 times"),
])  # fmt: skip
def test_bad_configs_are_clear_errors(fields, message):
    with pytest.raises(ValueError, match=message):
        ResNet(**fields)


# The mini ResNet on images resized to 8×8 (8, 4 and 2 pixels a side in its stages): seconds a run.
SMALL = TrainConfig(model="resnet-mini", image_size=8, epochs=2, batch_size=64, lr=2e-3, warmup_epochs=0.5,
                    train_subset=1024, val_size=256, test_subset=200)  # fmt: skip


@pytest.fixture(scope="module")
def whole(cifar_dir, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("resnet") / "whole"
    return run_dir, train(SMALL, run_dir, data_dir=cifar_dir, progress=False)


def test_trains_through_the_loop_and_resumes_bit_identical(whole, cifar_dir, tmp_path):
    run_dir, history = whole
    assert history[-1]["train_loss"] < history[0]["train_loss"] and history[-1]["test_accuracy"] > 0.15
    with pytest.raises(minivit.train.Interrupted, match="stopped at epoch 2, step 3"):
        train(SMALL, tmp_path / "stopped", data_dir=cifar_dir, progress=False, callbacks=[ctrl_c_at(2, 3)])
    resume(tmp_path / "stopped", data_dir=cifar_dir, progress=False)
    model, meta, _ = load_checkpoint(tmp_path / "stopped" / "checkpoint.npz")
    assert isinstance(model, ResNet) and meta["model_class"] == "ResNet"
    assert_bit_identical(model.state_dict(), load_checkpoint(run_dir / "checkpoint.npz")[0].state_dict())
    evaluated = subprocess.run([sys.executable, "-m", "minivit", "evaluate", run_dir / "checkpoint.npz",
                                "--data-dir", cifar_dir], capture_output=True, text=True, timeout=300)  # fmt: skip
    assert evaluated.returncode == 0 and "test accuracy" in evaluated.stdout, evaluated.stderr


def test_a_vit_cannot_start_from_a_resnet(whole, cifar_dir, tmp_path):
    vit = TrainConfig(model="mini", dim=16, depth=1, heads=2, mlp_dim=32, init=str(whole[0] / "checkpoint.npz"),
                      epochs=1, train_subset=256, test_subset=100)  # fmt: skip
    with pytest.raises(ValueError, match="cannot start from init .* which holds ResNet weights"):
        train(vit, tmp_path / "vit", data_dir=cifar_dir, progress=False)


def test_a_resnet_takes_no_vit_settings():
    with pytest.raises(ValueError, match="patch_size set the ViT's layout; model 'resnet-mini' is a ResNet"):
        TrainConfig(model="resnet-mini", patch_size=2).check()
