"""Learning-rate schedules with warm-up, reduce-on-plateau, and optimizer choice.

The learning rate of a step is `base · warmup(step) · decay(step) · plateau`,
where `plateau` is a variable that `ReduceOnPlateau` lowers after evaluations
that did not improve the monitored metric, and that checkpoints save.
"""
import math

import keras
import tensorflow as tf

from vt_keras.errors import ConfigError
from vt_keras.registry import Registry

OPTIMIZERS = Registry("optimizer")


@OPTIMIZERS.register("adam")
def _adam(cfg):
    return keras.optimizers.Adam(learning_rate=cfg.learning_rate, beta_1=cfg.beta_1,
                                 beta_2=cfg.beta_2, epsilon=cfg.epsilon)


@OPTIMIZERS.register("adamw")
def _adamw(cfg):
    return keras.optimizers.AdamW(learning_rate=cfg.learning_rate, weight_decay=cfg.weight_decay,
                                  beta_1=cfg.beta_1, beta_2=cfg.beta_2,
                                  epsilon=cfg.epsilon)


@OPTIMIZERS.register("radam")
def _radam(cfg):
    from vt_keras.optimizers import RAdam

    return RAdam(learning_rate=cfg.learning_rate, beta_1=cfg.beta_1, beta_2=cfg.beta_2,
                 epsilon=cfg.epsilon, weight_decay=cfg.weight_decay or None)


@OPTIMIZERS.register("sgd")
def _sgd(cfg):
    return keras.optimizers.SGD(learning_rate=cfg.learning_rate, momentum=cfg.momentum)


def build_optimizer(cfg):
    """The optimizer named by `cfg.name` (adam, adamw, radam, sgd)."""
    return OPTIMIZERS.get(cfg.name, key="optimizer.name")(cfg)


class LearningRate:
    """`base · warmup · decay` as a function of the step (a scalar tensor)."""

    DECAYS = ("constant", "cosine", "linear")

    def __init__(self, base, total_steps, warmup_steps=0, warmup_init=0.0, decay="constant", end_factor=0.0):
        if decay not in self.DECAYS:
            raise ConfigError(f"optimizer.decay={decay!r} is unknown; expected one of {', '.join(self.DECAYS)}")
        if base <= 0:
            raise ConfigError(f"optimizer.learning_rate={base} must be > 0")
        self.base = float(base)
        self.total_steps = max(int(total_steps), 1)
        self.warmup_steps = int(warmup_steps)
        self.warmup_init = float(warmup_init)
        self.decay = decay
        self.end_factor = float(end_factor)

    def __call__(self, step):
        step = tf.cast(step, tf.float32)
        lr = tf.constant(self.base, tf.float32)
        if self.warmup_steps > 0:
            frac = tf.minimum((step + 1.0) / self.warmup_steps, 1.0)
            lr = self.warmup_init + (lr - self.warmup_init) * frac
        if self.decay != "constant":
            span = max(self.total_steps - self.warmup_steps, 1)
            progress = tf.clip_by_value((step - self.warmup_steps) / span, 0.0, 1.0)
            if self.decay == "cosine":
                factor = 0.5 * (1.0 + tf.cos(math.pi * progress))
            else:
                factor = 1.0 - progress
            lr = lr * (self.end_factor + (1.0 - self.end_factor) * factor)
        return lr

    @classmethod
    def from_config(cls, opt_cfg, total_steps):
        return cls(
            base=opt_cfg.learning_rate,
            total_steps=total_steps,
            warmup_steps=opt_cfg.warmup_steps,
            warmup_init=opt_cfg.warmup_init,
            decay=opt_cfg.decay,
            end_factor=opt_cfg.end_factor,
        )


class ReduceOnPlateau:
    """Multiplies the learning rate by `factor` after `patience` evaluations without improvement.

    The paper of Goyal et al. lowers the learning rate on a validation plateau
    with patience 2. State (scale, best value, waits) lives in variables so a
    resumed run continues where it stopped.
    """

    def __init__(self, monitor=None, mode="max", patience=2, factor=0.1, min_scale=1e-3):
        if mode not in ("max", "min"):
            raise ConfigError(f"optimizer.plateau_mode={mode!r}; expected 'max' or 'min'")
        self.monitor = monitor
        self.mode = mode
        self.patience = int(patience)
        self.factor = float(factor)
        self.min_scale = float(min_scale)
        init_best = -float("inf") if mode == "max" else float("inf")
        self.scale = tf.Variable(1.0, trainable=False, dtype=tf.float32, name="lr_scale")
        self.best = tf.Variable(init_best, trainable=False, dtype=tf.float32, name="plateau_best")
        self.waits = tf.Variable(0, trainable=False, dtype=tf.int64, name="plateau_waits")

    def trackables(self):
        return {"lr_scale": self.scale, "plateau_best": self.best, "plateau_waits": self.waits}

    def update(self, metrics):
        """Feeds one evaluation's metrics; returns True when the rate was lowered."""
        if not self.monitor or self.patience <= 0 or self.monitor not in metrics:
            return False
        value = float(metrics[self.monitor])
        best = float(self.best.numpy())
        improved = value > best if self.mode == "max" else value < best
        if improved:
            self.best.assign(value)
            self.waits.assign(0)
            return False
        self.waits.assign_add(1)
        if int(self.waits.numpy()) >= self.patience:
            self.scale.assign(max(float(self.scale.numpy()) * self.factor, self.min_scale))
            self.waits.assign(0)
            return True
        return False
