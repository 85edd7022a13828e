"""Transfer learning: load a trained model, give it a new head, freeze what should not move.

The ResNet lab's case: a CIFAR-10 ResNet fine-tuned on the 15-class CIFAR-10 + reptiles set with
all but the head frozen. Frozen BatchNorm layers run in inference mode (Keras does this when a BN
layer has trainable=False), so their moving statistics are not disturbed by the new data.
"""
import fnmatch
import re

import keras

from tfcnn import models
from tfcnn.errors import TfcnnError

HEAD = ("predictions", "probs")


def replace_head(model, num_classes):
    """Same network up to the features, a new head for num_classes (the builders' own: models.classifier)."""
    try:
        features = model.get_layer("predictions").input
    except ValueError:
        raise TfcnnError(f"model {model.name} has no 'predictions' layer; only tfcnn models can be fine-tuned") from None
    return keras.Model(model.inputs, models.classifier(features, num_classes), name=f"{model.name}_transfer")


def _block(name):
    """Layers of one residual/inverted block share a 'stageX_blockY' prefix; other layers stand alone."""
    match = re.match(r"^(stage\d+_block\d+|block_?\d+)_", name)
    return match.group(1) if match else name


def apply_freeze(model, spec):
    """Freeze layers by spec; returns the names of the frozen layers.

    none: train everything. all: only the head trains. all-but-last:N: the last N blocks
    (residual blocks count as one) and the head train. Otherwise a comma list of layer-name
    globs to freeze, e.g. 'stem_*,stage1_*,stage2_*'.
    """
    body = [layer for layer in model.layers if layer.name not in HEAD and layer.weights]
    if spec == "none":
        frozen = []
    elif spec == "all":
        frozen = body
    elif spec.startswith("all-but-last:"):
        try:
            n = int(spec.split(":", 1)[1])
            assert n >= 0
        except (ValueError, AssertionError):
            raise TfcnnError(f"--freeze {spec!r}: N must be a non-negative integer, e.g. all-but-last:2") from None
        blocks = list(dict.fromkeys(_block(layer.name) for layer in body))
        keep = set(blocks[len(blocks) - n:]) if n else set()
        frozen = [layer for layer in body if _block(layer.name) not in keep]
    else:
        patterns = [p.strip() for p in spec.split(",") if p.strip()]
        frozen = [layer for layer in body if any(fnmatch.fnmatchcase(layer.name, p) for p in patterns)]
        unmatched = [p for p in patterns if not any(fnmatch.fnmatchcase(layer.name, p) for layer in body)]
        if unmatched:
            raise TfcnnError(f"--freeze patterns {unmatched} match no layer of {model.name}; "
                             f"layer names look like {', '.join(layer.name for layer in body[:4])}, ...")
    for layer in model.layers:
        layer.trainable = layer not in frozen
    return [layer.name for layer in frozen]


def unfreeze_for_fine_tuning(model):
    """Second stage: everything trains except BatchNorm, whose statistics stay as pretrained."""
    for layer in model.layers:
        layer.trainable = not isinstance(layer, keras.layers.BatchNormalization)
