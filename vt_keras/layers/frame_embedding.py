"""A per-frame dense embedding that can take one per-video vector beside each frame."""
import keras
from keras import ops

from vt_keras.layers import checks


@keras.saving.register_keras_serializable(package="vt_keras")
class FrameEmbedding(keras.layers.Layer):
    """Dense layer over every frame, optionally of the frame joined with a per-video vector.

    Without `context` this is `keras.layers.Dense` applied to each frame:
    `act(x_t W + b)`. With a per-video `context` vector c it is the same
    dense layer applied to the concatenation `[x_t ; c]` of every frame with
    c, computed in its factored form

        act([x_t ; c] [W ; W_c] + b) = act(x_t W + (c W_c + b))

    so c's product is taken once per video instead of once per frame and the
    `[B, T, D + E]` concatenation is never formed. This is how CM-C
    (Goyal et al.) joins the correlation tower's embedding to a modality's
    input features when the modality has a learned frame embedding: the
    embedding stays `units` wide whatever the context's size.

    Args:
        units: output size per frame.
        activation: activation of the output (a Keras activation name or
            None).
        **kwargs: standard `keras.layers.Layer` arguments.

    Call arguments:
        inputs: frames `[B, T, D]`.
        context: optional `[B, E]`, one vector per video; its weights
            (`context_kernel`, `[E, units]`) are created when the layer is
            first called with it.
        mask: optional `[B, T]` bool; passed on unchanged (the output of a
            padded frame is not zeroed: the layers after it read the mask).

    Returns:
        `[B, T, units]`.

    Example:
    >>> layer = FrameEmbedding(4)
    >>> layer(np.zeros((2, 10, 16), "f"), context=np.zeros((2, 3), "f")).shape
    TensorShape([2, 10, 4])
    """

    def __init__(self, units, activation="relu", **kwargs):
        super().__init__(**kwargs)
        checks.positive_int("units", units)
        self.units = units
        self.activation = activation
        self.activation_fn = keras.activations.get(activation)
        self.supports_masking = True
        self.context_kernel = None

    def build(self, inputs_shape, context_shape=None):
        inputs_shape = checks.frames_shape(self, inputs_shape)
        fan_in = inputs_shape[-1]
        if context_shape is not None:
            context_shape = checks.tensor_shape(self, context_shape, "context", (2,))
            fan_in += context_shape[-1]
        # Glorot uniform over the joined fan-in, as one Dense on [x ; c] draws its kernel.
        limit = (6.0 / (fan_in + self.units)) ** 0.5
        self.kernel = self.add_weight(name="kernel", shape=(inputs_shape[-1], self.units),
                                      initializer=keras.initializers.RandomUniform(-limit, limit))
        if context_shape is not None:
            self.context_kernel = self.add_weight(
                name="context_kernel", shape=(context_shape[-1], self.units),
                initializer=keras.initializers.RandomUniform(-limit, limit))
        self.bias = self.add_weight(name="bias", shape=(self.units,), initializer="zeros")
        self.built = True

    def call(self, inputs, context=None, mask=None):
        if (context is None) != (self.context_kernel is None):
            have = "with" if self.context_kernel is not None else "without"
            raise checks.shape_error(self, "context", f"given on every call, as when the layer was built "
                                     f"({have} one)", "None" if context is None else "a tensor")
        shift = self.bias
        if context is not None:
            context = ops.cast(context, self.compute_dtype)
            shift = ops.matmul(context, self.context_kernel) + self.bias
            shift = ops.expand_dims(shift, 1)
        out = ops.matmul(inputs, self.kernel) + shift
        return self.activation_fn(out)

    def compute_mask(self, inputs, mask=None):
        return mask

    def compute_output_shape(self, inputs_shape, context_shape=None):
        return tuple(inputs_shape[:-1]) + (self.units,)

    def get_config(self):
        config = super().get_config()
        config.update(units=self.units, activation=self.activation)
        return config
