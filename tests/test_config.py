import json
from pathlib import Path

import pytest

from tfcnn.config import ARCH_DEFAULTS, Config, make_config
from tfcnn.errors import TfcnnError


def test_resnet_defaults_follow_the_lab():
    config = make_config({"arch": "resnet"})
    assert (config.optimizer, config.lr, config.momentum, config.nesterov) == ("sgd", 0.1, 0.9, True)
    assert (config.batch_size, config.epochs, config.schedule) == (128, 200, "step")
    assert config.milestones == [81, 122] and config.gamma == 0.1
    assert config.weight_decay == 1e-4 and config.stack_n == 5 and config.dataset == "cifar10"
    assert config.model_options() == {"stack_n": 5, "weight_decay": 1e-4}


@pytest.mark.parametrize("path", sorted((Path(__file__).parents[1] / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_config_file_is_valid(path):
    config = make_config({}, path)  # raises TfcnnError on an unknown field or a bad value
    assert config.arch and config.dataset and config.epochs >= 1


def test_the_resnet32_recipe_is_the_lab_network_in_at_most_60_epochs():
    config = make_config({}, Path(__file__).parents[1] / "configs" / "resnet32_cifar10_fast.yaml")
    assert (config.arch, config.stack_n, config.dataset) == ("resnet", 5, "cifar10")
    assert config.epochs <= 60


def test_precedence_defaults_arch_file_flags(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("arch: resnet\nepochs: 30\nmilestones: [15, 25]\nlr: 0.05\n")
    config = make_config({"lr": "0.02", "stack_n": "3"}, path)
    assert config.epochs == 30 and config.milestones == [15, 25]
    assert config.lr == 0.02 and config.stack_n == 3
    assert config.optimizer == ARCH_DEFAULTS["resnet"]["optimizer"]


def test_an_arch_default_class_subset_goes_with_its_own_dataset_only():
    assert make_config({"arch": "cifar_cnn"}).classes == ["0", "55", "58"]  # the lecture's CIFAR-100 classes
    assert make_config({"arch": "cifar_cnn", "dataset": "cifar100"}).classes == ["0", "55", "58"]
    assert make_config({"arch": "cifar_cnn", "dataset": "cifar10_reptiles"}).classes is None
    assert make_config({"arch": "cifar_cnn", "dataset": "cifar10", "classes": "cat,dog"}).classes == ["cat", "dog"]


def test_json_file_and_list_flags(tmp_path):
    path = tmp_path / "run.json"
    path.write_text(json.dumps({"arch": "lenet5", "activation": "relu"}))
    config = make_config({"milestones": "10,20", "classes": "cat,dog", "augment": "false"}, path)
    assert config.milestones == [10, 20] and config.classes == ["cat", "dog"] and config.augment is False
    assert config.model_options() == {"activation": "relu"}


@pytest.mark.parametrize("overrides, phrase", [
    ({"arch": "vgg"}, "unknown --arch"),
    ({"lr": "-0.1"}, "--lr must be positive"),
    ({"lr": "fast"}, "not a valid float"),
    ({"arch": "resnet", "stack_n": "0"}, "--stack-n must be at least 1"),
    ({"epochs": "0"}, "--epochs"),
    ({"optimizer": "rmsprop"}, "unknown --optimizer"),
    ({"milestones": "122,81"}, "--milestones"),
    ({"freeze": "all"}, "--freeze needs --init-from"),
    ({"val_fraction": "1.5"}, "--val-fraction"),
    ({"val_fraction": "0"}, "add --checkpoint last"),
    ({"checkpoint": "final"}, "unknown --checkpoint"),
    ({"steps_per_execution": "0"}, "--steps-per-execution must be at least 1"),
    ({"steps_per_execution": "auto"}, "not a valid int"),
    ({"epochs": "10", "sam_epochs": "11"}, "--sam-epochs must be between 0"),
    ({"optimizer": "sam", "sam_epochs": "2"}, "--optimizer sam already takes SAM steps in every epoch"),
    ({"optimizer": "sgd", "sam_epochs": "2", "strategy": "mirrored"}, "--sam-epochs runs on one device"),
])
def test_bad_values_raise_one_clear_error(overrides, phrase):
    with pytest.raises(TfcnnError, match=phrase.replace("-", r"\-")):
        make_config(overrides)


def test_bad_config_files(tmp_path):
    with pytest.raises(TfcnnError, match="does not exist"):
        make_config({}, tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("epochs: [1\n")
    with pytest.raises(TfcnnError, match="could not be parsed"):
        make_config({}, bad)
    unknown = tmp_path / "unknown.json"
    unknown.write_text('{"epoch": 3}')
    with pytest.raises(TfcnnError, match="unknown fields"):
        make_config({}, unknown)


def test_config_round_trips_through_json(tmp_path):
    config = make_config({"arch": "resnet", "epochs": "3"})
    config.to_json(tmp_path / "c.json")
    again = Config(**json.loads((tmp_path / "c.json").read_text()))
    assert again == config


def test_a_field_an_older_config_json_lacks_counts_as_its_default():
    config = make_config({"arch": "lenet5", "epochs": 3})
    saved = config.to_dict()
    del saved["cutout"]  # written before --cutout existed
    assert config.changed_from(saved) == []
    assert make_config({"arch": "lenet5", "epochs": 3, "cutout": 8}).changed_from(saved) == ["cutout"]
    assert make_config({"arch": "lenet5", "epochs": 4}).changed_from(saved, free={"epochs"}) == []


def test_every_train_flag_has_a_help_line_with_its_default_grouped_by_concern():
    import argparse

    from tfcnn import config as config_lib

    parser = config_lib.add_flags(argparse.ArgumentParser())
    titles = [g.title for g in parser._action_groups]
    assert [t for t in titles if t in config_lib.GROUPS] == list(config_lib.GROUPS)
    fields = {a.dest: a for a in parser._actions if a.dest in Config.__dataclass_fields__}
    assert set(fields) == set(Config.__dataclass_fields__)
    for name, action in fields.items():
        assert action.help and "(default: " in action.help, name
    assert "choices: sgd, adam, sam" in fields["optimizer"].help
    assert "all-but-last:N" in fields["freeze"].help
    assert " ".join(parser.format_help().split()).count("(default: ") == len(fields)
