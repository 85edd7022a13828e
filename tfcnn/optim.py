"""Optimizers, learning-rate schedules and SAM (the training step the MobileNetV2 homework uses)."""
import math

import keras
import tensorflow as tf
from keras import ops

from tfcnn.errors import TfcnnError
from tfcnn.initializers import whiten_layer


@keras.saving.register_keras_serializable(package="tfcnn")
class LabSchedule(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warmup, then constant, step (x gamma at each milestone) or cosine decay; all per step.

    Per-step (not per-epoch) so that a run resumed from a mid-training backup continues on
    exactly the same curve: the optimizer's iteration counter is part of the backup.
    """

    def __init__(self, base_lr, kind, steps_per_epoch, total_epochs, milestones=(), gamma=0.1, warmup_epochs=0.0,
                 start=0.0, end=0.0):
        self.start = float(start)
        self.end = float(end)
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
        elif self.kind == "triangle":
            # airbench's triangle: linear from lr x start at step 0 to lr at the peak (--warmup-epochs), then
            # linear to lr x end at the last step (its lr_schedule over total_train_steps).
            total = float(self.steps_per_epoch * self.total_epochs)
            peak = float(int(self.warmup_epochs * self.steps_per_epoch))
            rise = self.start + (1.0 - self.start) * step / max(peak, 1.0)
            fall = 1.0 + (self.end - 1.0) * (step - peak) / max(total - peak, 1.0)
            return lr * tf.where(step <= peak, rise, fall)
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
                    warmup_epochs=self.warmup_epochs, start=self.start, end=self.end)


@keras.saving.register_keras_serializable(package="tfcnn")
class RecipeSGD(keras.optimizers.SGD):
    """SGD (Nesterov) with airbench's extras (Jordan 2024, arXiv:2404.00498), each off by default:

    - `rules`: {variable path: [lr multiplier, last step or None]}: BatchNorm biases at 64x the rate, or
      a variable that trains for the first N steps only (the whitening bias);
    - `coupled_decay`: weight decay added to the gradient (PyTorch SGD's weight_decay, so it passes through
      the momentum), not Keras' decoupled weight_decay;
    - lookahead: every `lookahead_every` steps the average `averaged` variables (the model's weights and
      BatchNorm statistics; default: the trained ones) move towards the weights by 1 - decay, then the weights
      become the average; decay = 0.95^5 (t / T)^3 over `total_steps` T, and at step T the weights take the
      average as it is (airbench's LookaheadState). The averages are optimizer variables, so a backup keeps them.
    - `muon_lr` > 0: conv kernels (4-D) train by Muon instead (Jordan et al. 2024; airbench94_muon.py): Nesterov
      momentum `muon_momentum`, the update orthogonalised by 3 Newton-Schulz steps, the kernel renormalised to
      Frobenius norm sqrt(filters) before each step, and its rate muon_lr x the schedule's share of its peak.
    """

    def __init__(self, learning_rate=0.01, momentum=0.0, nesterov=False, *, rules=None, coupled_decay=0.0,
                 lookahead_every=0, total_steps=0, averaged=None, muon_lr=0.0, muon_momentum=0.6, **kwargs):
        super().__init__(learning_rate, momentum=momentum, nesterov=nesterov, **kwargs)
        self.muon_lr = float(muon_lr)
        self.muon_momentum = float(muon_momentum)
        self.rules = {str(k): [float(v[0]), None if v[1] is None else int(v[1])] for k, v in (rules or {}).items()}
        self.coupled_decay = float(coupled_decay)
        self.lookahead_every = int(lookahead_every)
        self.total_steps = int(total_steps)
        self._averaged_source = averaged

    def build(self, variables):
        if self.built:
            return
        super().build(variables)
        # update_step sees the backend's variable (no Keras path), so the rules are looked up by index.
        self._rule_of = [self.rules.get(v.path, (1.0, None)) for v in variables]
        if self.lookahead_every:
            source = list(self._averaged_source) if self._averaged_source is not None else list(variables)
            self._averaged = [v for v in source if "float" in str(v.dtype)]
            self._averages = self.add_optimizer_variables(self._averaged, "lookahead")

    def update_step(self, gradient, variable, learning_rate):
        if self.muon_lr and len(variable.shape) == 4:
            return self._muon_step(gradient, variable, learning_rate)
        scale, last = self._rule_of[self._get_variable_index(variable)]
        lr = ops.cast(learning_rate, variable.dtype)
        g = ops.cast(gradient, variable.dtype) * scale
        if self.coupled_decay:
            g = g + self.coupled_decay * variable
        if self.momentum:
            m = self.momentums[self._get_variable_index(variable)]
            self.assign(m, m * self.momentum - lr * g)
            step = m * self.momentum - lr * g if self.nesterov else m
        else:
            step = -lr * g
        if last is not None:
            step = step * ops.cast(self.iterations < last, variable.dtype)
        self.assign_add(variable, step)

    def _muon_step(self, gradient, variable, learning_rate):
        m = self.momentums[self._get_variable_index(variable)]
        g = ops.cast(gradient, variable.dtype)
        # Muon's buffer accumulates gradients (PyTorch's SGD form: buf = mu * buf + g; Nesterov: g + mu * buf).
        self.assign(m, m * self.muon_momentum + g)
        g = g + self.muon_momentum * m if self.nesterov else m
        filters = variable.shape[-1]
        self.assign(variable, variable * (filters ** 0.5 / (ops.norm(ops.reshape(variable, [-1])) + 1e-12)))
        update = ops.reshape(newton_schulz(ops.transpose(ops.reshape(g, [-1, filters]))), [filters, -1])
        share = ops.cast(learning_rate, variable.dtype) / self._peak_lr()
        self.assign_sub(variable, self.muon_lr * share * ops.reshape(ops.transpose(update), variable.shape))

    def _peak_lr(self):
        schedule = self._learning_rate
        return float(getattr(schedule, "base_lr", None) or ops.convert_to_numpy(self.learning_rate))

    def _backend_apply_gradients(self, grads, trainable_variables):  # a private Keras hook (tfcnn.compat.OVERRIDDEN)
        if self.lookahead_every:
            def start():  # the average starts at the weights training starts from
                for average, var in zip(self._averages, self._averaged):
                    average.assign(ops.cast(var, average.dtype))

            ops.cond(ops.equal(self.iterations, 0), start, lambda: None)
        super()._backend_apply_gradients(grads, trainable_variables)
        if self.lookahead_every:
            self._lookahead()

    def _lookahead(self):
        t = ops.cast(self.iterations + 1, "float32")  # steps taken, this one included
        total = float(max(self.total_steps, 1))
        last = t >= total
        due = ops.logical_or(ops.equal(ops.mod(self.iterations + 1, self.lookahead_every), 0), last)
        decay = ops.where(last, 1.0, 0.95 ** 5 * (t / total) ** 3)

        def update():
            for average, var in zip(self._averages, self._averaged):
                average.assign(average * decay + ops.cast(var, average.dtype) * (1.0 - decay))
                var.assign(average)

        ops.cond(due, update, lambda: None)

    def get_config(self):
        return {**super().get_config(), "rules": self.rules, "coupled_decay": self.coupled_decay,
                "lookahead_every": self.lookahead_every, "total_steps": self.total_steps, "muon_lr": self.muon_lr,
                "muon_momentum": self.muon_momentum}


def newton_schulz(g, steps=3, eps=1e-7):
    """airbench94_muon's quintic Newton-Schulz iteration: G (rows x cols) -> roughly its orthogonal factor
    U V^T (singular values pushed into ~0.5-1.5), in float32."""
    x = ops.cast(g, "float32")
    x = x / (ops.norm(ops.reshape(x, [-1])) + eps)
    tall = x.shape[0] > x.shape[1]
    if tall:
        x = ops.transpose(x)
    a, b, c = 3.4445, -4.7750, 2.0315
    for _ in range(steps):
        gram = ops.matmul(x, ops.transpose(x))
        x = a * x + ops.matmul(b * gram + c * ops.matmul(gram, gram), x)
    return ops.cast(ops.transpose(x) if tall else x, g.dtype)


def recipe_rules(model, config, steps_per_epoch):
    """RecipeSGD's per-variable rules from a Config: BatchNorm biases at --bn-bias-lr, the whitening layer's
    bias at --whiten-bias-lr for the first --whiten-bias-epochs only."""
    rules = {}
    if config.bn_bias_lr != 1.0:
        for layer in model.layers:
            if isinstance(layer, keras.layers.BatchNormalization) and layer.center:
                rules[layer.beta.path] = [config.bn_bias_lr, None]
    if config.whiten_bias_epochs is not None or config.whiten_bias_lr != 1.0:
        layer = whiten_layer(model, "--whiten-bias-epochs / --whiten-bias-lr")
        if layer.bias is not None:
            last = None if config.whiten_bias_epochs is None else config.whiten_bias_epochs * steps_per_epoch
            rules[layer.bias.path] = [config.whiten_bias_lr, last]
    return rules


def decoupled_to_keras(config, global_batch):
    """airbench's decoupled hyperparameters (lr and weight decay per 1024 images of a summed loss, Nesterov
    momentum's step growth 1 + 1 / (1 - momentum) divided out) as Keras' mean-loss lr and a coupled decay."""
    kilostep = 1024 * (1 + 1 / (1 - config.momentum))
    return config.lr * global_batch / kilostep, config.weight_decay / config.lr


def uses_recipe_sgd(config):
    return config.optimizer == "muon" or (config.optimizer == "sgd" and (
        config.hyperparameters == "decoupled" or config.bn_bias_lr != 1.0 or config.lookahead_every > 0
        or config.whiten_bias_epochs is not None or config.whiten_bias_lr != 1.0))


def make_optimizer(config, steps_per_epoch, *, lr=None, epochs=None, decoupled_weight_decay=True, model=None,
                   global_batch=None):
    """The optimizer a Config asks for. SAM's base optimizer is SGD with momentum. `model` (and `global_batch`
    for --hyperparameters decoupled) are needed by the airbench recipe's options (RecipeSGD)."""
    coupled = 0.0
    if config.hyperparameters == "decoupled":
        base, coupled = decoupled_to_keras(config, global_batch or config.batch_size)
        lr = base * (lr / config.lr) if lr else base
    schedule = LabSchedule(lr or config.lr, config.schedule, steps_per_epoch, epochs or config.epochs,
                           config.milestones, config.gamma, config.warmup_epochs, config.lr_start, config.lr_end)
    if uses_recipe_sgd(config):
        if model is None:
            raise TfcnnError("the airbench recipe's optimizer options need the model (tfcnn.train passes it)")
        total = steps_per_epoch * (epochs or config.epochs)
        return RecipeSGD(schedule, momentum=config.momentum, nesterov=config.nesterov,
                         rules=recipe_rules(model, config, steps_per_epoch), coupled_decay=coupled,
                         lookahead_every=config.lookahead_every, total_steps=total,
                         averaged=model.weights if config.lookahead_every else None,
                         muon_lr=config.muon_lr if config.optimizer == "muon" else 0.0,
                         muon_momentum=config.muon_momentum)
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
    Costs two forward/backward passes per batch. Build it as SAMModel(inputs, outputs, rho=...). While
    `sharpness_aware` is False it takes Keras' plain steps (tfcnn.callbacks.SamFrom turns SAM on mid-run).
    """

    def __init__(self, *args, rho=0.05, sharpness_aware=True, **kwargs):
        super().__init__(*args, **kwargs)
        self.rho = rho
        self.sharpness_aware = sharpness_aware

    def _loss_and_grads(self, x, y, sample_weight, variables):
        with tf.GradientTape() as tape:
            y_pred = self(x, training=True)
            loss = self.compute_loss(x=x, y=y, y_pred=y_pred, sample_weight=sample_weight, training=True)
            scaled = self.optimizer.scale_loss(loss)
        grads = tape.gradient(scaled, variables)
        return y_pred, loss, grads

    def train_step(self, data):
        if not self.sharpness_aware:
            return super().train_step(data)
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


def with_sam(model, rho, sharpness_aware=True):
    """Wrap a Functional model's graph in SAMModel (same layers, same weights)."""
    return SAMModel(model.inputs, model.outputs, rho=rho, sharpness_aware=sharpness_aware, name=model.name)
