"""Rectified Adam (RAdam) for Keras 3, in place of tensorflow-addons' RectifiedAdam.

tensorflow-addons no longer imports under Keras 3 and Keras has no RAdam;
CrossCLR (Zolfaghari et al. 2021) trains with it.
"""
import keras
from keras import ops

from vt_keras.errors import ConfigError


@keras.saving.register_keras_serializable(package="vt_keras")
class RAdam(keras.optimizers.Optimizer):
    """Rectified Adam: Adam whose adaptive step is switched on once its variance is tractable.

    Implements Algorithm 2 of Liu et al. 2020, "On the Variance of the
    Adaptive Learning Rate and Beyond" (ICLR). With step t = 1, 2, ...:

        m_t = b1 m + (1 - b1) g          m_hat = m_t / (1 - b1^t)
        v_t = b2 v + (1 - b2) g^2        v_hat = v_t / (1 - b2^t)
        rho_inf = 2 / (1 - b2) - 1
        rho_t = rho_inf - 2 t b2^t / (1 - b2^t)
        if rho_t > sma_threshold:
            r_t = sqrt((rho_t - 4)(rho_t - 2) rho_inf / ((rho_inf - 4)(rho_inf - 2) rho_t))
            theta -= lr * r_t * m_hat / (sqrt(v_hat) + epsilon)
        else:
            theta -= lr * m_hat

    The paper switches at rho_t > 4; tensorflow-addons' RectifiedAdam (and
    this class by default) at 5, comparing with `>=` where this class, like
    the paper, uses `>` (the two differ only if rho_t hits the threshold
    exactly). With b2 = 0.999 the first four steps (rho_t <= 4) are momentum
    steps under both; step 5 (rho_5 = 4.996) is rectified only under the
    paper's threshold. tensorflow-addons' built-in warmup (`total_steps`,
    `warmup_proportion`, `min_lr`) is not reproduced: pass a
    `keras.optimizers.schedules.LearningRateSchedule` instead. Epsilon sits
    outside the square root as in tensorflow-addons.

    `weight_decay` is decoupled (AdamW-style, Loshchilov & Hutter 2019):
    `theta -= lr * weight_decay * theta` before the step, as in
    tensorflow-addons' RectifiedAdam and Keras' AdamW.

    Args:
        learning_rate: a float, a `LearningRateSchedule`, or a callable.
        beta_1: decay rate of the first-moment estimate.
        beta_2: decay rate of the second-moment estimate.
        epsilon: added to `sqrt(v_hat)` for numerical stability.
        sma_threshold: rho_t above which the rectified adaptive step is used;
            at least 4 (the paper), 5 in tensorflow-addons.
        weight_decay: optional decoupled weight decay.
        clipnorm, clipvalue, global_clipnorm, use_ema, ema_momentum,
        ema_overwrite_frequency, loss_scale_factor,
        gradient_accumulation_steps, name: as for every Keras optimizer.

    Call: `apply_gradients(grads_and_vars)` or `model.compile(optimizer=RAdam())`.

    Example:
        >>> model.compile(optimizer=RAdam(learning_rate=1e-3), loss="mse")
    """

    def __init__(
        self,
        learning_rate=0.001,
        beta_1=0.9,
        beta_2=0.999,
        epsilon=1e-7,
        sma_threshold=5.0,
        weight_decay=None,
        clipnorm=None,
        clipvalue=None,
        global_clipnorm=None,
        use_ema=False,
        ema_momentum=0.99,
        ema_overwrite_frequency=None,
        loss_scale_factor=None,
        gradient_accumulation_steps=None,
        name="radam",
        **kwargs,
    ):
        super().__init__(
            learning_rate=learning_rate,
            name=name,
            weight_decay=weight_decay,
            clipnorm=clipnorm,
            clipvalue=clipvalue,
            global_clipnorm=global_clipnorm,
            use_ema=use_ema,
            ema_momentum=ema_momentum,
            ema_overwrite_frequency=ema_overwrite_frequency,
            loss_scale_factor=loss_scale_factor,
            gradient_accumulation_steps=gradient_accumulation_steps,
            **kwargs,
        )
        if not 0.0 <= beta_1 < 1.0 or not 0.0 < beta_2 < 1.0:
            raise ConfigError(
                f"RAdam needs 0 <= beta_1 < 1 and 0 < beta_2 < 1; found {beta_1}, {beta_2}."
            )
        if sma_threshold < 4.0:
            # r_t has a factor (rho_t - 4): below 4 its square root is undefined.
            raise ConfigError(f"RAdam sma_threshold must be >= 4; found {sma_threshold}.")
        self.beta_1 = beta_1
        self.beta_2 = beta_2
        self.epsilon = epsilon
        self.sma_threshold = sma_threshold

    def build(self, var_list):
        """Creates the first- and second-moment slots of every variable."""
        if self.built:
            return
        super().build(var_list)
        self._momentums, self._velocities = self.add_optimizer_variables(
            var_list, ["momentum", "velocity"]
        )

    def update_step(self, gradient, variable, learning_rate):
        """Applies one RAdam step to `variable`."""
        dtype = variable.dtype
        lr = ops.cast(learning_rate, dtype)
        gradient = ops.cast(gradient, dtype)
        step = ops.cast(self.iterations + 1, dtype)
        beta_1 = ops.cast(self.beta_1, dtype)
        beta_2 = ops.cast(self.beta_2, dtype)
        beta_1_power = ops.power(beta_1, step)
        beta_2_power = ops.power(beta_2, step)

        m = self._momentums[self._get_variable_index(variable)]
        v = self._velocities[self._get_variable_index(variable)]
        self.assign_add(m, ops.multiply(ops.subtract(gradient, m), 1.0 - beta_1))
        self.assign_add(v, ops.multiply(ops.subtract(ops.square(gradient), v), 1.0 - beta_2))

        m_hat = ops.divide(m, 1.0 - beta_1_power)
        v_hat_sqrt = ops.sqrt(ops.divide(v, 1.0 - beta_2_power))
        rho_inf = 2.0 / (1.0 - beta_2) - 1.0
        rho_t = rho_inf - 2.0 * step * beta_2_power / (1.0 - beta_2_power)
        # Clamped so the branch not taken stays finite (rho_t <= 4 early on).
        r_sq = (rho_t - 4.0) * (rho_t - 2.0) * rho_inf / ((rho_inf - 4.0) * (rho_inf - 2.0) * rho_t)
        r_t = ops.sqrt(ops.maximum(r_sq, 0.0))
        rectified = ops.divide(ops.multiply(r_t, m_hat), ops.add(v_hat_sqrt, self.epsilon))
        update = ops.where(rho_t > ops.cast(self.sma_threshold, dtype), rectified, m_hat)
        self.assign_sub(variable, ops.multiply(lr, update))

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "beta_1": self.beta_1,
                "beta_2": self.beta_2,
                "epsilon": self.epsilon,
                "sma_threshold": self.sma_threshold,
            }
        )
        return config
