"""Shared checks for the library's Keras layers.

`run_layer_test` puts a layer through what a Keras user will do with it:
rebuild it from its config, call it eagerly and on `keras.Input`s, save and
reload a model that holds it, train it for one step, run it under mixed
precision and, for sequence layers, check that padded frames are ignored.
Each check raises `AssertionError` with a message naming what differed.
"""
import os
import tempfile

import keras
import numpy as np

__all__ = ["run_layer_test"]


def _to_numpy(tree):
    return keras.tree.map_structure(
        lambda t: None if t is None else np.asarray(keras.ops.convert_to_numpy(t)),
        tree,
    )


def _flatten(tree):
    if tree is None:  # no mask / no output: no tensors, not one None leaf
        return []
    return keras.tree.flatten(tree)


def _is_tensor_like(x):
    return isinstance(x, np.ndarray) or keras.ops.is_tensor(x)


def _assert_close(actual, expected, atol, rtol, what):
    actual = _flatten(_to_numpy(actual))
    expected = _flatten(_to_numpy(expected))
    assert len(actual) == len(expected), (
        f"{what}: expected {len(expected)} output tensors, found {len(actual)}"
    )
    for i, (a, e) in enumerate(zip(actual, expected)):
        assert a.shape == e.shape, (
            f"{what}: output {i} has shape {a.shape}, expected {e.shape}"
        )
        np.testing.assert_allclose(
            a.astype(np.float64), e.astype(np.float64), atol=atol, rtol=rtol,
            err_msg=f"{what}: output {i} differs",
        )


def _output_shapes(tree):
    """Shapes in the output's structure: a tuple, or a dict/list of tuples."""
    if isinstance(tree, dict):
        return {k: _output_shapes(v) for k, v in tree.items()}
    if isinstance(tree, (list, tuple)):
        return [_output_shapes(v) for v in tree]
    return tuple(tree.shape)


def _normalize_shapes(shapes):
    if isinstance(shapes, dict):
        return {k: _normalize_shapes(v) for k, v in shapes.items()}
    if isinstance(shapes, (list, tuple)) and shapes and isinstance(shapes[0], (list, tuple, dict)):
        return [_normalize_shapes(v) for v in shapes]
    return tuple(shapes)


def _same_shape(symbolic, eager):
    return len(symbolic) == len(eager) and all(
        s is None or s == e for s, e in zip(symbolic, eager)
    )


class _Call:
    """One way of calling the layer: its inputs, masks and tensor kwargs."""

    def __init__(self, input_data, mask, call_kwargs):
        self.input_data = input_data
        self.mask = mask
        self.call_kwargs = dict(call_kwargs or {})
        self.tensor_keys = sorted(
            k for k, v in self.call_kwargs.items() if _is_tensor_like(v)
        )

    def eager(self, layer, **extra):
        kwargs = dict(self.call_kwargs, **extra)
        if self.mask is not None:
            kwargs["mask"] = self.mask
        return layer(self.input_data, **kwargs)

    def flat_arrays(self):
        """The model inputs, in the order `build_model` declares them."""
        arrays = list(_flatten(self.input_data))
        arrays += [m for m in _flatten(self.mask) if m is not None]
        arrays += [self.call_kwargs[k] for k in self.tensor_keys]
        return [np.asarray(keras.ops.convert_to_numpy(a)) for a in arrays]

    def build_model(self, layer, head=None):
        """A functional model whose inputs are the flattened call tensors."""

        def make_input(x):
            x = np.asarray(keras.ops.convert_to_numpy(x))
            return keras.Input(shape=x.shape[1:], dtype=str(x.dtype))

        data_inputs = keras.tree.map_structure(make_input, self.input_data)
        mask_inputs = None
        if self.mask is not None:
            mask_inputs = keras.tree.map_structure(
                lambda m: None if m is None else make_input(m), self.mask
            )
        kwargs = dict(self.call_kwargs)
        kw_inputs = {k: make_input(kwargs[k]) for k in self.tensor_keys}
        kwargs.update(kw_inputs)
        if mask_inputs is not None:
            kwargs["mask"] = mask_inputs
        outputs = layer(data_inputs, **kwargs)
        if head is not None:
            outputs = head(outputs)
        flat_inputs = list(_flatten(data_inputs))
        flat_inputs += [m for m in _flatten(mask_inputs) if m is not None]
        flat_inputs += [kw_inputs[k] for k in self.tensor_keys]
        return keras.Model(flat_inputs, outputs), outputs


def _concat_head(outputs):
    """Flattens any output structure into one float32 `[B, N]` tensor."""
    parts = []
    for t in _flatten(outputs):
        t = keras.ops.cast(t, "float32")
        width = int(np.prod(t.shape[1:]))
        parts.append(keras.ops.reshape(t, (-1, width)))
    return parts[0] if len(parts) == 1 else keras.ops.concatenate(parts, axis=-1)


def _check_config(layer_cls, init_kwargs, layer, call, atol, rtol, reference):
    config = layer.get_config()
    for key, value in init_kwargs.items():
        assert key in config, f"get_config() lacks the init argument {key!r}"
        if isinstance(value, (bool, int, float, str, tuple, list, type(None))):
            found = config[key]
            if isinstance(value, tuple) and isinstance(found, list):
                found = tuple(found)
            assert found == value, (
                f"get_config()[{key!r}] is {found!r}, expected {value!r}"
            )
    revived = layer_cls.from_config(config)
    assert revived.get_config() == config, "from_config(get_config()) changes the config"
    call.eager(revived)  # builds it
    assert len(revived.weights) == len(layer.weights), (
        f"a layer rebuilt from its config has {len(revived.weights)} weights, "
        f"the original {len(layer.weights)}"
    )
    revived.set_weights(layer.get_weights())
    _assert_close(call.eager(revived), reference, atol, rtol, "from_config layer")


def _check_save_load(layer, call, reference, atol, rtol):
    model, _ = call.build_model(layer)
    flat = call.flat_arrays()
    _assert_close(model(flat), reference, atol, rtol, "functional model vs eager layer")
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "model.keras")
        model.save(path)
        loaded = keras.saving.load_model(path)
    _assert_close(loaded(flat), model(flat), atol, rtol, ".keras save and load")


def _check_training(layer, call, reference, expect_all_weights_trained, train_eagerly):
    if not layer.trainable_weights:
        return
    model, _ = call.build_model(layer, head=_concat_head)
    before = [np.array(w.numpy()) for w in layer.trainable_weights]
    flat = call.flat_arrays()
    batch = flat[0].shape[0]
    width = sum(int(np.prod(a.shape[1:])) for a in _flatten(reference))
    # Random targets: a zero target gives no gradient to L2-normalised outputs.
    target = np.random.default_rng(0).normal(size=(batch, width))
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="mse",
                  run_eagerly=train_eagerly)
    history = model.fit(flat, target.astype("float32"), batch_size=batch, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0]), "fit step gave a non-finite loss"
    changed = [
        not np.array_equal(b, w.numpy()) for b, w in zip(before, layer.trainable_weights)
    ]
    assert any(changed), "one fit step changed no trainable weight"
    if expect_all_weights_trained:
        frozen = [w.path for c, w in zip(changed, layer.trainable_weights) if not c]
        assert not frozen, f"one fit step left these trainable weights unchanged: {frozen}"


def _check_mixed_precision(layer_cls, init_kwargs, layer, call, reference, mixed_tol):
    mixed = layer_cls(**dict(init_kwargs, dtype="mixed_bfloat16"))
    call.eager(mixed)
    for w in mixed.weights:
        assert keras.backend.standardize_dtype(w.dtype) == "float32", (
            f"under mixed_bfloat16 the variable {w.path} is {w.dtype}, expected float32"
        )
    mixed.set_weights(layer.get_weights())
    outputs = _flatten(_to_numpy(call.eager(mixed)))
    expected = _flatten(_to_numpy(reference))
    for i, (o, e) in enumerate(zip(outputs, expected)):
        o = o.astype(np.float64)
        assert np.all(np.isfinite(o)), f"mixed_bfloat16 output {i} is not finite"
        scale = max(1.0, float(np.max(np.abs(e)))) if e.size else 1.0
        err = float(np.max(np.abs(o - e))) if e.size else 0.0
        assert err <= mixed_tol * scale, (
            f"mixed_bfloat16 output {i} differs from float32 by {err:.3g}, "
            f"expected at most {mixed_tol * scale:.3g}"
        )


def _pad_with_garbage(x, m, num_padding_frames, time_axis, rng):
    """Overwrites masked frames with garbage and appends masked garbage frames."""
    x = np.asarray(keras.ops.convert_to_numpy(x))
    m = np.asarray(keras.ops.convert_to_numpy(m)).astype(bool)
    garbage = lambda shape: (rng.normal(size=shape) * 3.0 + 1.0).astype(x.dtype)  # noqa: E731
    keep = m.reshape(m.shape + (1,) * (x.ndim - m.ndim))
    x = np.where(keep, x, garbage(x.shape))
    pad_shape = list(x.shape)
    pad_shape[time_axis] = num_padding_frames
    x = np.concatenate([x, garbage(pad_shape)], axis=time_axis)
    mask_pad = list(m.shape)
    mask_pad[time_axis] = num_padding_frames
    m = np.concatenate([m, np.zeros(mask_pad, bool)], axis=time_axis)
    return x, m


def _check_masking_invariance(layer, call, num_padding_frames, time_axis, atol, rtol, reference):
    assert call.mask is not None, "run_masking_invariance needs a mask"
    rng = np.random.default_rng(7)
    single = not isinstance(call.input_data, (tuple, list))
    xs = [call.input_data] if single else list(call.input_data)
    ms = [call.mask] if single else list(call.mask)
    assert len(xs) == len(ms), (
        f"mask has {len(ms)} entries, expected one per input ({len(xs)})"
    )
    padded_x, padded_m = [], []
    for x, m in zip(xs, ms):
        if m is None:
            padded_x.append(x)
            padded_m.append(None)
            continue
        px, pm = _pad_with_garbage(x, m, num_padding_frames, time_axis, rng)
        padded_x.append(px)
        padded_m.append(pm)
    if single:
        padded = _Call(padded_x[0], padded_m[0], call.call_kwargs)
    else:
        padded = _Call(type(call.input_data)(padded_x), tuple(padded_m), call.call_kwargs)
    outputs = _flatten(_to_numpy(padded.eager(layer)))
    expected = _flatten(reference)
    # Sequence outputs (same time length as the padded input) are compared on
    # the original valid frames only; what a layer writes at padded frames is
    # free.
    first_mask = next(np.asarray(m) for m in ms if m is not None)
    padded_len = first_mask.shape[time_axis] + num_padding_frames
    for i, (o, e) in enumerate(zip(outputs, expected)):
        if o.ndim > time_axis and o.shape[time_axis] == padded_len:
            o = np.take(o, np.arange(e.shape[time_axis]), axis=time_axis)
            keep = first_mask.reshape(first_mask.shape + (1,) * (o.ndim - first_mask.ndim))
            o, e = np.where(keep, o, 0), np.where(keep, e, 0)
        _assert_close(o, e, atol, rtol,
                      f"masking invariance (garbage in masked and appended frames), output {i}")


def run_layer_test(
    layer_cls,
    init_kwargs,
    input_data,
    expected_output_shape=None,
    mask=None,
    call_kwargs=None,
    run_training=True,
    run_mixed_precision=True,
    run_masking_invariance=False,
    expect_all_weights_trained=True,
    train_eagerly=True,
    num_padding_frames=3,
    time_axis=1,
    atol=1e-5,
    rtol=1e-5,
    masking_atol=1e-5,
    mixed_tol=5e-2,
):
    """Checks a layer's config, symbolic and eager calls, saving, training and masking.

    Args:
        layer_cls: the layer class.
        init_kwargs: dict of constructor arguments.
        input_data: the first call argument: an array, or a tuple of arrays
            such as `(video, audio)`. The leading axis is the batch.
        expected_output_shape: the eager output's shape, or a structure of
            shapes (a dict for dict outputs). Not checked if None.
        mask: the `mask=` call argument, matching `input_data`'s structure
            (e.g. `(video_mask, audio_mask)`), or None.
        call_kwargs: further call arguments, e.g. `{"correlation": p}`;
            arrays become model inputs, other values pass through.
        run_training: fit a wrapper model one step and check the layer's
            trainable weights changed.
        run_mixed_precision: rebuild under `mixed_bfloat16` with the same
            weights; variables must stay float32 and outputs must be finite
            and within `mixed_tol` (relative to the largest output, at least
            1) of the float32 outputs.
        run_masking_invariance: overwrite every masked frame with garbage,
            append `num_padding_frames` garbage frames with a False mask along
            `time_axis`, and require the same outputs to `masking_atol`.
        expect_all_weights_trained: with `run_training`, require every
            trainable weight to change (else at least one).
        train_eagerly: run the fit step eagerly (on TensorFlow several times
            faster for tiny models; the symbolic call already traces the
            layer). Pass False to compile the training step as well; on JAX,
            whose eager mode compiles every operation it meets, that is the
            faster choice.
        num_padding_frames: frames appended in the masking check.
        time_axis: axis of the input arrays that the mask covers.
        atol: absolute tolerance of the exact-equality checks.
        rtol: relative tolerance of the exact-equality checks.
        masking_atol: absolute tolerance of the masking check.
        mixed_tol: tolerance of the mixed-precision comparison.

    Returns:
        The eager float32 output as numpy (same structure as the layer's).

    Example:
        >>> run_layer_test(FramePooling, {"mode": "mean"}, x, mask=m,
        ...                expected_output_shape=(2, 8),
        ...                run_masking_invariance=True)
    """
    call = _Call(input_data, mask, call_kwargs)
    layer = layer_cls(**init_kwargs)
    eager_out = call.eager(layer)
    reference = _to_numpy(eager_out)
    if expected_output_shape is not None:
        found = _output_shapes(reference)
        expected = _normalize_shapes(expected_output_shape)
        assert found == expected, f"output shape is {found}, expected {expected}"
    for i, arr in enumerate(_flatten(reference)):
        assert np.all(np.isfinite(arr)), f"float32 output {i} is not finite"

    _, symbolic_out = call.build_model(layer)
    sym_shapes = [tuple(t.shape) for t in _flatten(symbolic_out)]
    eag_shapes = [a.shape for a in _flatten(reference)]
    assert len(sym_shapes) == len(eag_shapes) and all(
        _same_shape(s, e) for s, e in zip(sym_shapes, eag_shapes)
    ), f"symbolic output shapes {sym_shapes} disagree with eager {eag_shapes}"

    _check_config(layer_cls, init_kwargs, layer, call, atol, rtol, reference)
    _check_save_load(layer, call, reference, atol, rtol)
    if run_masking_invariance:
        _check_masking_invariance(
            layer, call, num_padding_frames, time_axis, masking_atol, rtol, reference
        )
    if run_mixed_precision:
        _check_mixed_precision(layer_cls, init_kwargs, layer, call, reference, mixed_tol)
    if run_training:
        _check_training(layer, call, reference, expect_all_weights_trained, train_eagerly)
    return reference
