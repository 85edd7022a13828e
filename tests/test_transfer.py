"""Transfer learning: new head, frozen layers really frozen, the cifar10_reptiles path end to end."""
import json

import keras
import numpy as np
import pytest

from test_data import write_cifar10, write_cifar100
from tfcnn import config, models, train, transfer
from tfcnn.errors import TfcnnError

REPTILES = ["crocodile", "dinosaur", "lizard", "snake", "turtle"]


@pytest.fixture
def canonical_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("TFCNN_CACHE_DIR", str(tmp_path / "cache"))
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    write_cifar10(data_dir / "cifar-10-python.tar.gz", per_batch=40)
    write_cifar100(data_dir / "cifar-100-python.tar.gz")
    return data_dir


def _weights_by_layer(model):
    return {layer.name: [w.copy() for w in layer.get_weights()] for layer in model.layers if layer.weights}


def test_freeze_specs():
    model = transfer.replace_head(models.build("resnet", (32, 32, 3), 10, stack_n=2), 7)
    assert model.output_shape == (None, 7) and model.get_layer("predictions").units == 7

    frozen = transfer.apply_freeze(model, "all")
    assert "stem_conv" in frozen and "final_bn" in frozen and "predictions" not in frozen
    assert [w.name for w in model.trainable_weights] == ["kernel", "bias"]

    frozen = transfer.apply_freeze(model, "all-but-last:1")
    assert "stage3_block1_conv1" in frozen and "stage3_block2_conv1" in frozen
    assert "final_bn" not in frozen and model.get_layer("final_bn").trainable

    frozen = transfer.apply_freeze(model, "stem_*,stage1_*")
    assert set(frozen) == {layer.name for layer in model.layers
                           if layer.weights and layer.name.startswith(("stem_", "stage1_"))}
    transfer.unfreeze_for_fine_tuning(model)
    trainable = {layer.name for layer in model.layers if layer.trainable and layer.weights}
    assert "stem_conv" in trainable and "stage3_block2_conv2" in trainable
    assert not any(isinstance(model.get_layer(name), keras.layers.BatchNormalization) for name in trainable)
    with pytest.raises(TfcnnError, match="match no layer"):
        transfer.apply_freeze(model, "conv9_*")
    with pytest.raises(TfcnnError, match="non-negative integer"):
        transfer.apply_freeze(model, "all-but-last:x")


def _pretrain_resnet8(tmp_path, canonical_dir):
    """One epoch of ResNet-8 on the canonical CIFAR-10 files, exported to saved/pre; the settings shared with
    the fine-tune that follows."""
    common = dict(data_dir=str(canonical_dir), runs_dir=str(tmp_path / "runs"), verbose="0", tensorboard="false",
                  saved_models_dir=str(tmp_path / "saved"), batch_size="32", val_fraction="0.2")
    train.train_and_evaluate(config.make_config(
        {**common, "arch": "resnet", "stack_n": "1", "dataset": "cifar10", "epochs": "1", "name": "pre"}))
    return common


def test_cifar10_resnet_to_reptiles_keeps_frozen_layers(tmp_path, canonical_dir):
    common = _pretrain_resnet8(tmp_path, canonical_dir)
    pretrained = keras.models.load_model(tmp_path / "saved" / "pre" / "model.keras")
    before = _weights_by_layer(pretrained)

    metrics = train.train_and_evaluate(config.make_config(
        {**common, "arch": "resnet", "dataset": "cifar10_reptiles", "init_from": str(tmp_path / "saved" / "pre"),
         "freeze": "all", "epochs": "2", "lr": "0.05", "name": "reptiles"}))
    tuned = keras.models.load_model(tmp_path / "runs" / "reptiles" / "model.keras")
    assert tuned.output_shape == (None, 15)
    after = _weights_by_layer(tuned)
    body = [name for name in before if name != "predictions"]
    assert "stage1_block1_preact_bn" in body
    for name in body:  # BatchNorm moving statistics included: frozen BN runs in inference mode
        for old, new in zip(before[name], after[name]):
            np.testing.assert_array_equal(old, new, err_msg=name)
    assert after["predictions"][0].shape == (64, 15)

    assert metrics["frozen_layers"] and "predictions" not in metrics["frozen_layers"]
    per_class = metrics["test"]["per_class"]
    assert list(per_class)[10:] == REPTILES and all(per_class[name]["support"] > 0 for name in REPTILES)
    report = (tmp_path / "runs" / "reptiles" / "classification_report.txt").read_text()
    assert all(name in report for name in REPTILES)
    meta = json.loads((tmp_path / "saved" / "reptiles" / "tfcnn.json").read_text())
    assert meta["class_names"][10:] == REPTILES


def test_second_stage_unfreezes_all_but_batchnorm(tmp_path, canonical_dir):
    common = _pretrain_resnet8(tmp_path, canonical_dir)
    before = _weights_by_layer(keras.models.load_model(tmp_path / "saved" / "pre" / "model.keras"))
    train.train_and_evaluate(config.make_config(
        {**common, "arch": "resnet", "dataset": "cifar100:reptiles", "init_from": str(tmp_path / "saved" / "pre"),
         "freeze": "all", "epochs": "1", "fine_tune_epochs": "1", "fine_tune_lr": "0.01", "name": "two_stage"}))
    after = _weights_by_layer(keras.models.load_model(tmp_path / "runs" / "two_stage" / "model.keras"))
    assert after["predictions"][0].shape[-1] == 5
    for old, new in zip(before["final_bn"], after["final_bn"]):  # stage 2 never moves BatchNorm
        np.testing.assert_array_equal(old, new)
    history = (tmp_path / "runs" / "two_stage" / "history_fine_tune.csv").read_text().splitlines()
    assert len(history) == 2
