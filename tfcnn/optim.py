"""Optimizers, learning-rate schedules and SAM (the training step the MobileNetV2 homework uses)."""
import math

import keras
import tensorflow as tf

from tfcnn.errors import TfcnnError


@keras.saving.register_keras_serializable(package="tfcnn")
class LabSchedule(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warmup, then constant, step (x gamma at each milestone) or cosine decay; all per step.

    Per-step (not per-epoch) so that a run resumed from a mid-training backup continues on
    exactly the same curve: the optimizer's iteration counter is part of the backup.
    """

    def __init__(self, base_lr, kind, steps_per_epoch, total_epochs, milestones=(), gamma=0.1, warmup_epochs=0.0):
        self.base_lr = float(base_lr)
        self.kind = kind
        self.steps_per_epoch = int(steps_per_epoch)
        self.total_epochs = int(total_epochs)
        self.milestones = [int(m) for m in milestones]
        self.gamma = float(gamma)
        self.warmup_epochs = float(warmup_epochs)

    def __call__(self, step):
        step = tf.cast(step, tf.float32)
        epoch = step / self.steps_per_epoch
        lr = tf.constant(self.base_lr, tf.float32)
        if self.kind == "step":
            # The lab steps at epoch boundaries: epochs 0..80 at 0.1, 81..121 at 0.01, then 0.001.
            passed = tf.add_n([tf.cast(tf.floor(epoch) >= m, tf.float32) for m in self.milestones] or [0.0])
            lr = lr * tf.pow(self.gamma, passed)
        elif self.kind == "cosine":
            span = max(self.total_epochs - self.warmup_epochs, 1e-9)
            progress = tf.clip_by_value((epoch - self.warmup_epochs) / span, 0.0, 1.0)
            lr = lr * 0.5 * (1.0 + tf.cos(math.pi * progress))
        if self.warmup_epochs > 0:
            lr = lr * tf.minimum(1.0, (epoch + 1.0 / self.steps_per_epoch) / self.warmup_epochs)
        return lr

    def get_config(self):
        return dict(base_lr=self.base_lr, kind=self.kind, steps_per_epoch=self.steps_per_epoch,
                    total_epochs=self.total_epochs, milestones=self.milestones, gamma=self.gamma,
                    warmup_epochs=self.warmup_epochs)


def make_optimizer(config, steps_per_epoch, *, lr=None, epochs=None, decoupled_weight_decay=True):
    """The optimizer a Config asks for. SAM's base optimizer is SGD with momentum."""
    schedule = LabSchedule(lr or config.lr, config.schedule, steps_per_epoch, epochs or config.epochs,
                           config.milestones, config.gamma, config.warmup_epochs)
    # ResNet carries its weight decay as L2 in the model (the lab's choice); others decay in the optimizer.
    wd = config.weight_decay if (decoupled_weight_decay and config.weight_decay > 0) else None
    # Keras' EMA averages the trainable weights (BatchNorm's moving statistics are kept as trained).
    ema = dict(use_ema=True, ema_momentum=config.ema) if config.ema > 0 else {}
    if config.optimizer in ("sgd", "sam"):
        return keras.optimizers.SGD(schedule, momentum=config.momentum, nesterov=config.nesterov, weight_decay=wd,
                                    **ema)
    if config.optimizer == "adam":
        if wd:
            return keras.optimizers.AdamW(schedule, weight_decay=wd, **ema)
        return keras.optimizers.Adam(schedule, **ema)
    raise TfcnnError(f"unknown optimizer {config.optimizer!r}")


class SAMModel(keras.Model):
    """Sharpness-aware minimisation (Foret et al. 2021, arXiv:2010.01412) as a train_step.

    Each step: gradient at w, climb to w + rho * g/||g||, take the gradient there, step from w.
    Costs two forward/backward passes per batch. Build it as SAMModel(inputs, outputs, rho=...).
    """

    def __init__(self, *args, rho=0.05, **kwargs):
        super().__init__(*args, **kwargs)
        self.rho = rho

    def _loss_and_grads(self, x, y, sample_weight, variables):
        with tf.GradientTape() as tape:
            y_pred = self(x, training=True)
            loss = self.compute_loss(x=x, y=y, y_pred=y_pred, sample_weight=sample_weight, training=True)
            scaled = self.optimizer.scale_loss(loss)
        grads = tape.gradient(scaled, variables)
        return y_pred, loss, grads

    def train_step(self, data):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        variables = self.trainable_variables
        _, _, grads = self._loss_and_grads(x, y, sample_weight, variables)
        grads = [tf.zeros_like(var) if grad is None else grad for var, grad in zip(variables, grads)]
        replica = tf.distribute.get_replica_context()
        replicas = replica.num_replicas_in_sync if replica is not None else 1
        if replicas > 1:
            # Each replica holds a slice of the batch (its loss already divided by the replica count): climb
            # along the whole batch's gradient, as one process would, so every copy of the weights moves alike.
            grads = replica.all_reduce("sum", grads)
        scale = self.rho / (tf.linalg.global_norm(grads) + 1e-12)
        origin = [tf.identity(var) for var in variables]
        for var, grad in zip(variables, grads):
            var.assign_add(tf.cast(grad * scale, var.dtype))
        y_pred, loss, grads = self._loss_and_grads(x, y, sample_weight, variables)
        for var, value in zip(variables, origin):
            var.assign(value)  # w exactly: w + e - e need not be w in floating point, and replicas must agree
        self.optimizer.apply_gradients(zip(grads, variables))
        # Report the loss at the perturbed point, which is what SAM minimises (per example, as Keras' own step).
        for metric in self.metrics:
            if metric.name == "loss":
                metric.update_state(loss * replicas, sample_weight=tf.shape(x)[0])
        return self.compute_metrics(x, y, y_pred, sample_weight=sample_weight)


def with_sam(model, rho):
    """Wrap a Functional model's graph in SAMModel (same layers, same weights)."""
    return SAMModel(model.inputs, model.outputs, rho=rho, name=model.name)
