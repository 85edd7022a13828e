import numpy as np
import pytest

from tfcnn.config import make_config
from tfcnn.optim import LabSchedule, make_optimizer, with_sam


def _lr(schedule, epoch, steps):
    return float(schedule(epoch * steps))


def test_step_schedule_matches_the_lab():
    s = LabSchedule(0.1, "step", steps_per_epoch=391, total_epochs=200, milestones=[81, 122], gamma=0.1)
    assert _lr(s, 0, 391) == pytest.approx(0.1)
    assert _lr(s, 80.99, 391) == pytest.approx(0.1)
    assert _lr(s, 81, 391) == pytest.approx(0.01)
    assert _lr(s, 121, 391) == pytest.approx(0.01)
    assert _lr(s, 122, 391) == pytest.approx(0.001)
    assert _lr(s, 199, 391) == pytest.approx(0.001)


def test_cosine_with_warmup():
    s = LabSchedule(1.0, "cosine", steps_per_epoch=10, total_epochs=11, warmup_epochs=1)
    assert float(s(0)) == pytest.approx(0.1)          # first warmup step
    assert float(s(9)) == pytest.approx(1.0)          # end of warmup
    assert float(s(10 + 50)) == pytest.approx(0.5, abs=1e-6)  # half way through the decay
    assert float(s(110)) == pytest.approx(0.0, abs=1e-6)


def test_schedule_serialises():
    s = LabSchedule(0.1, "step", 5, 10, [3, 6], 0.5, 1.0)
    again = LabSchedule.from_config(s.get_config())
    steps = np.arange(0, 50, 3)
    np.testing.assert_allclose([float(s(i)) for i in steps], [float(again(i)) for i in steps])


def test_optimizer_choices():
    sgd = make_optimizer(make_config({"arch": "resnet"}), 10, decoupled_weight_decay=False)
    assert sgd.__class__.__name__ == "SGD" and sgd.nesterov and sgd.weight_decay is None
    adamw = make_optimizer(make_config({"arch": "lenet5", "weight_decay": "1e-4"}), 10)
    assert adamw.__class__.__name__ == "AdamW"


def test_sam_step_trains_and_restores_the_climb():
    import keras

    inputs = keras.Input((4,))
    outputs = keras.layers.Dense(2, activation="softmax", name="probs")(inputs)
    sam = with_sam(keras.Model(inputs, outputs), rho=0.05)
    sam.compile(optimizer=keras.optimizers.SGD(0.0), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    x = np.random.default_rng(0).normal(size=(32, 4)).astype("float32")
    y = (x[:, 0] > 0).astype("int32")
    before = [w.copy() for w in sam.get_weights()]
    sam.fit(x, y, epochs=1, batch_size=8, verbose=0)
    # With lr 0 the only weight movement would be a climb that was not undone.
    for a, b in zip(before, sam.get_weights()):
        np.testing.assert_allclose(a, b, atol=1e-6)
    sam.compile(optimizer=keras.optimizers.SGD(0.5), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    history = sam.fit(x, y, epochs=15, batch_size=8, verbose=0)
    assert history.history["loss"][-1] < history.history["loss"][0]
    assert history.history["accuracy"][-1] > 0.8


def _pass_counter():
    """A layer that counts its training-mode forward passes: one a plain step, two a SAM step."""
    import keras

    class PassCounter(keras.layers.Layer):
        def build(self, input_shape):
            self.passes = self.add_weight(shape=(), initializer="zeros", trainable=False, name="passes")

        def call(self, x, training=False):
            if training:
                self.passes.assign_add(1.0)
            return x

    return PassCounter()


@pytest.mark.parametrize("initial_epoch, passes", [(0, 4 + 2 * 4 * 2), (2, 2 * 4)])
def test_sam_from_turns_sam_on_for_the_last_epochs_and_on_resuming_late(initial_epoch, passes):
    """--sam-epochs: plain steps (one forward pass) until SamFrom's epoch, SAM steps (two) from it on, also when a
    resumed run starts past it."""
    import keras

    from tfcnn.callbacks import SamFrom

    inputs = keras.Input((4,))
    counter = _pass_counter()
    outputs = keras.layers.Dense(2, activation="softmax")(counter(inputs))
    sam = with_sam(keras.Model(inputs, outputs), rho=0.05, sharpness_aware=False)
    sam.compile(optimizer=keras.optimizers.SGD(0.1), loss="sparse_categorical_crossentropy")
    x = np.random.default_rng(0).normal(size=(32, 4)).astype("float32")
    y = (x[:, 0] > 0).astype("int32")
    sam.fit(x, y, epochs=3, initial_epoch=initial_epoch, batch_size=8, verbose=0, callbacks=[SamFrom(1)])
    assert float(counter.passes.numpy()) == passes and sam.sharpness_aware


def test_ema_validates_and_checkpoints_the_average_and_trains_on_exactly_the_raw_weights(tmp_path):
    """--ema: validation and the best checkpoint see the optimizer's moving average; training continues on the
    trained weights, bit for bit (Keras' own swap adds and subtracts, which rounds)."""
    import keras

    from tfcnn.checkpoints import EMAValidation, ModelCheckpoint, ema_weights

    keras.utils.set_random_seed(0)
    inputs = keras.Input((4,))
    model = keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(inputs))
    optimizer = make_optimizer(make_config({"arch": "lenet5", "optimizer": "sgd", "lr": "0.3", "ema": "0.9"}), 4)
    assert optimizer.use_ema and optimizer.ema_momentum == pytest.approx(0.9)
    model.compile(optimizer=optimizer, loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    x = np.random.default_rng(0).normal(size=(32, 4)).astype("float32")
    y = (x[:, 0] > 0).astype("int32")
    raw_at_epoch_end, seen = [], []

    class Spy(keras.callbacks.Callback):
        def on_test_begin(self, logs=None):
            seen.append([v.numpy().copy() for v in model.trainable_variables])

    best = tmp_path / "best.weights.h5"

    class RawAtEpochEnd(keras.callbacks.Callback):  # the trained weights, before fit finalises the average
        def on_epoch_end(self, epoch, logs=None):
            raw_at_epoch_end.append([v.numpy().copy() for v in model.trainable_variables])

    model.fit(x, y, batch_size=8, epochs=3, validation_data=(x, y), verbose=0,
              callbacks=[EMAValidation(), Spy(), ModelCheckpoint(str(best), save_weights_only=True), RawAtEpochEnd()])
    averages = [v.numpy() for v in optimizer._model_variables_moving_average]
    for at_validation, average in zip(seen[-1], averages):
        np.testing.assert_array_equal(at_validation, average)
    assert any(not np.array_equal(a, r) for a, r in zip(averages, raw_at_epoch_end[-1]))
    # fit ends by putting the average in the model (Keras' finalize_variable_values); the checkpoint holds it too
    checked = keras.models.clone_model(model)
    checked.load_weights(best)
    for saved, average in zip(checked.trainable_variables, averages):
        np.testing.assert_array_equal(saved.numpy(), average)
    for var, raw in zip(model.trainable_variables, raw_at_epoch_end[-1]):
        var.assign(raw)
    with ema_weights(model):  # the average in, then the trained weights back, every value exactly
        for var, average in zip(model.trainable_variables, averages):
            np.testing.assert_array_equal(var.numpy(), average)
    for var, raw in zip(model.trainable_variables, raw_at_epoch_end[-1]):
        np.testing.assert_array_equal(var.numpy(), raw)
