"""Tests of NetVLAD and CrossModalNetVLAD."""
import keras
import numpy as np
import pytest
import tensorflow as tf

from vt_keras.errors import ConfigError
from vt_keras.layers.netvlad import CrossModalNetVLAD, NetVLAD
from vt_keras.testing import run_layer_test

EPS = 1e-12  # NetVLAD's default: the floor of every squared norm


def _frames(rng, b=3, t=5, d=3):
    x = rng.normal(size=(b, t, d)).astype("float32")
    mask = np.ones((b, t), bool)
    mask[0, 3:] = False
    mask[2, 1:] = False
    return x, mask


def _randomize(layer, rng):
    """Random values for every weight; batch-norm variances kept positive."""
    for w in layer.weights:
        value = rng.normal(size=w.shape)
        if "moving_variance" in w.path:
            value = rng.uniform(0.5, 2.0, size=w.shape)
        w.assign(value.astype("float32"))


def _assign_ref(layer, x, mask):
    """float64 assignments `[B, T, K]` in inference mode, 0 at padded frames."""
    logits = x.astype(np.float64) @ layer.assignment_dense.kernel.numpy()
    if layer.use_batch_norm:
        bn = layer.assignment_batch_norm
        mean, var = bn.moving_mean.numpy(), bn.moving_variance.numpy()
        logits = (logits - mean) / np.sqrt(var + bn.epsilon) * bn.gamma.numpy() + bn.beta.numpy()
    else:
        logits = logits + layer.assignment_dense.bias.numpy()
    e = np.exp(logits - logits.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True) * mask[..., None]


def _vlad_ref(weights, x, centers):
    """Loop form of Σ_t w_tk (x_t − c_k), intra-norm, flatten, L2 (float64)."""
    b, t, _ = x.shape
    k = centers.shape[0]
    out = []
    for i in range(b):
        v = np.zeros((k, x.shape[-1]))
        for j in range(t):
            for c in range(k):
                v[c] += weights[i, j, c] * (x[i, j].astype(np.float64) - centers[c])
        v = v / np.sqrt(np.maximum((v ** 2).sum(-1, keepdims=True), EPS))
        flat = v.reshape(-1)
        out.append(flat / np.sqrt(np.maximum((flat ** 2).sum(), EPS)))
    return np.stack(out)


def _np(x):
    return keras.ops.convert_to_numpy(x)


@pytest.mark.parametrize("use_batch_norm, output_dim, width",
                         [(True, None, 12), (False, None, 12), (True, 5, 5)])
def test_netvlad_layer_contract(rng, use_batch_norm, output_dim, width):
    x, mask = _frames(rng)
    run_layer_test(
        NetVLAD, {"num_clusters": 4, "output_dim": output_dim, "use_batch_norm": use_batch_norm},
        x, mask=mask, expected_output_shape=(3, width), run_masking_invariance=True,
    )


@pytest.mark.parametrize("use_batch_norm", [True, False])
def test_netvlad_matches_numpy(rng, use_batch_norm):
    x, mask = _frames(rng)
    layer = NetVLAD(num_clusters=4, use_batch_norm=use_batch_norm)
    layer.build(x.shape)
    _randomize(layer, rng)
    assignments = _assign_ref(layer, x, mask)
    expected = _vlad_ref(assignments, x, layer.centers.numpy())
    np.testing.assert_allclose(_np(layer(x, mask=mask)), expected, rtol=1e-5, atol=1e-6)
    out, returned = layer(x, mask=mask, return_assignments=True)
    np.testing.assert_allclose(_np(out), expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(_np(returned), np.transpose(assignments, (0, 2, 1)), rtol=1e-5, atol=1e-6)
    # Intra-normalisation: with ε negligible, every cluster block has norm
    # 1/sqrt(K) however unevenly the frames were assigned.
    tiny = NetVLAD(num_clusters=4, use_batch_norm=use_batch_norm, epsilon=1e-14)
    tiny.build(x.shape)
    tiny.set_weights(layer.get_weights())
    blocks = _np(tiny(x, mask=mask)).reshape(3, 4, 3)
    np.testing.assert_allclose(np.linalg.norm(blocks, axis=-1), 0.5, rtol=1e-4)


def test_netvlad_padding_equals_shorter_video(rng):
    x = rng.normal(size=(1, 4, 3)).astype("float32")
    layer = NetVLAD(num_clusters=3, use_batch_norm=False)
    short = _np(layer(x))
    padded = np.concatenate([x, rng.normal(size=(1, 6, 3)).astype("float32") * 50], axis=1)
    mask = np.arange(10)[None] < 4
    np.testing.assert_allclose(_np(layer(padded, mask=mask)), short, rtol=1e-5, atol=1e-6)


def test_netvlad_batch_norm_statistics_ignore_padded_frames(rng):
    """In training mode garbage in padded frames must not move the batch statistics."""
    x, mask = _frames(rng)
    garbage = np.where(mask[..., None], x, 1e3).astype("float32")
    layer = NetVLAD(num_clusters=4, use_batch_norm=True)
    clean = _np(layer(x, mask=mask, training=True))
    np.testing.assert_allclose(_np(layer(garbage, mask=mask, training=True)), clean,
                               rtol=1e-5, atol=1e-6)


def test_netvlad_empty_cluster_and_empty_video_are_finite(rng):
    x, mask = _frames(rng)
    mask[1, :] = False  # a video with no valid frame
    layer = NetVLAD(num_clusters=4, use_batch_norm=False)
    layer.build(x.shape)
    layer.assignment_dense.bias.assign(np.array([-1e4, 0, 0, 0], "float32"))  # cluster 0 empty
    variables = layer.trainable_weights
    with tf.GradientTape() as tape:
        out = layer(x, mask=mask)
        loss = tf.reduce_sum(out * tf.range(12, dtype=tf.float32))
    grads = tape.gradient(loss, variables)
    out = _np(out)
    assert np.all(np.isfinite(out))
    assert all(np.all(np.isfinite(_np(g))) for g in grads)
    np.testing.assert_array_equal(out[1], 0.0)
    np.testing.assert_array_equal(out.reshape(3, 4, 3)[:, 0], 0.0)
    # The other clusters still carry a unit-norm vector.
    np.testing.assert_allclose(np.linalg.norm(out[[0, 2]], axis=-1), 1.0, rtol=1e-5)


def _spy_dtypes(monkeypatch, names):
    seen = []
    for name in names:
        original = getattr(keras.ops, name)

        def spy(*args, _original=original, _name=name, **kwargs):
            tensors = [a for a in args if keras.ops.is_tensor(a)]
            seen.append((_name, {keras.backend.standardize_dtype(t.dtype) for t in tensors}))
            return _original(*args, **kwargs)

        monkeypatch.setattr(keras.ops, name, spy)
    return seen


@pytest.mark.parametrize("cross_modal", [False, True])
def test_mixed_bfloat16_keeps_softmax_sums_and_norms_in_float32(rng, monkeypatch, cross_modal):
    x, mask = _frames(rng)
    if cross_modal:
        layer = CrossModalNetVLAD(4, 2, dtype="mixed_bfloat16")
        layer((x, x[..., :2]), mask=(mask, mask))
    else:
        layer = NetVLAD(4, dtype="mixed_bfloat16")
        layer(x, mask=mask)
    seen = _spy_dtypes(monkeypatch, ["softmax", "einsum", "rsqrt"])
    if cross_modal:
        out = layer((x, x[..., :2]), mask=(mask, mask), correlation=np.ones(3, "float32"))
    else:
        out = layer(x, mask=mask)
    assert keras.backend.standardize_dtype(out.dtype) == "bfloat16"
    assert {name for name, _ in seen} == {"softmax", "einsum", "rsqrt"}
    assert all(dtypes == {"float32"} for _, dtypes in seen), seen


def _cross_modal_data(rng, b=3, t=5):
    video, video_mask = _frames(rng, b=b, t=t, d=3)
    audio = rng.normal(size=(b, t, 2)).astype("float32")
    audio_mask = video_mask.copy()
    audio_mask[1, 4] = False  # audio may end before video
    return video, audio, video_mask, audio_mask


def test_cross_modal_layer_contract(rng):
    video, audio, vm, am = _cross_modal_data(rng)
    run_layer_test(
        CrossModalNetVLAD,
        {"video_clusters": 4, "audio_clusters": 3, "transform_units": (5,), "output_dim": None},
        (video, audio), mask=(vm, am),
        call_kwargs={"correlation": np.array([0.2, 0.9, 0.5], "float32")},
        expected_output_shape=(3, 4 * 3 + 3 * 2), run_masking_invariance=True,
    )


def test_cross_modal_projection_and_column_correlation(rng):
    video, audio, vm, am = _cross_modal_data(rng)
    run_layer_test(
        CrossModalNetVLAD,
        {"video_clusters": 4, "audio_clusters": 3, "output_dim": 6, "use_batch_norm": False},
        (video, audio), mask=(vm, am),
        call_kwargs={"correlation": np.array([[0.2], [0.9], [0.5]], "float32")},
        expected_output_shape=(3, 6), run_mixed_precision=False,
    )


def _transform_ref(layers, alpha):
    h = alpha
    for layer in layers:
        h = np.maximum(h @ layer.kernel.numpy() + layer.bias.numpy(), 0.0)
    return h


def test_cross_modal_matches_numpy(rng):
    video, audio, vm, am = _cross_modal_data(rng)
    g = np.array([0.3, 1.0, 0.7])
    layer = CrossModalNetVLAD(4, 3, transform_units=2)
    layer.build((video.shape, audio.shape))
    _randomize(layer, rng)
    a_v = _assign_ref(layer.video_netvlad, video, vm)
    a_a = _assign_ref(layer.audio_netvlad, audio, am)
    both = (vm & am)[..., None] * g[:, None, None]
    w_v = a_v + both * _transform_ref(layer.audio_to_video, a_a)
    w_a = a_a + both * _transform_ref(layer.video_to_audio, a_v)
    expected = np.concatenate([
        _vlad_ref(w_v, video, layer.video_netvlad.centers.numpy()),
        _vlad_ref(w_a, audio, layer.audio_netvlad.centers.numpy()),
    ], axis=-1)
    out = _np(layer((video, audio), mask=(vm, am), correlation=g.astype("float32")))
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-6)
    out, (r_v, r_a) = layer((video, audio), mask=(vm, am), correlation=g.astype("float32"),
                            return_assignments=True)
    np.testing.assert_allclose(_np(out), expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(_np(r_v), np.transpose(w_v, (0, 2, 1)), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(_np(r_a), np.transpose(w_a, (0, 2, 1)), rtol=1e-5, atol=1e-6)


def _temporal_transform_ref(layers, alpha, mask):
    """F with kernel k: per layer, out_t = relu(b + Σ_j x_{t + j - (k-1)//2} W_j), zero outside [0, T) (float64 loops).

    Keras' "same" padding puts (k-1)//2 zeros before the sequence; before every layer after the first
    the source modality's padded frames are set to 0.
    """
    h = alpha.astype(np.float64)
    for i, layer in enumerate(layers):
        if i:
            h = h * mask[..., None]
        kernel, bias = layer.kernel.numpy().astype(np.float64), layer.bias.numpy().astype(np.float64)
        k, b, t = kernel.shape[0], h.shape[0], h.shape[1]
        out = np.zeros((b, t, kernel.shape[-1]))
        for n in range(b):
            for step in range(t):
                acc = bias.copy()
                for j in range(k):
                    src = step + j - (k - 1) // 2
                    if 0 <= src < t:
                        acc += h[n, src] @ kernel[j]
                out[n, step] = np.maximum(acc, 0.0)
        h = out
    return h


@pytest.mark.parametrize("kernel_size, hidden", [(3, None), (4, (5,))])
def test_cross_modal_temporal_transform_matches_numpy(rng, kernel_size, hidden):
    video, audio, vm, am = _cross_modal_data(rng)
    g = np.array([0.3, 1.0, 0.7])
    layer = CrossModalNetVLAD(4, 3, transform_units=hidden, transform_kernel_size=kernel_size)
    layer.build((video.shape, audio.shape))
    _randomize(layer, rng)
    assert all(sub.kernel.shape[0] == kernel_size for sub in layer.audio_to_video + layer.video_to_audio)
    a_v = _assign_ref(layer.video_netvlad, video, vm)
    a_a = _assign_ref(layer.audio_netvlad, audio, am)
    both = (vm & am)[..., None] * g[:, None, None]
    w_v = a_v + both * _temporal_transform_ref(layer.audio_to_video, a_a, am)
    w_a = a_a + both * _temporal_transform_ref(layer.video_to_audio, a_v, vm)
    expected = np.concatenate([
        _vlad_ref(w_v, video, layer.video_netvlad.centers.numpy()),
        _vlad_ref(w_a, audio, layer.audio_netvlad.centers.numpy()),
    ], axis=-1)
    out, (r_v, _) = layer((video, audio), mask=(vm, am), correlation=g.astype("float32"), return_assignments=True)
    np.testing.assert_allclose(_np(out), expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(_np(r_v), np.transpose(w_v, (0, 2, 1)), rtol=1e-5, atol=1e-6)


def test_cross_modal_temporal_transform_layer_contract(rng):
    video, audio, vm, am = _cross_modal_data(rng)
    run_layer_test(
        CrossModalNetVLAD,
        {"video_clusters": 4, "audio_clusters": 3, "transform_units": (5,), "transform_kernel_size": 3},
        (video, audio), mask=(vm, am),
        call_kwargs={"correlation": np.array([0.2, 0.9, 0.5], "float32")},
        expected_output_shape=(3, 4 * 3 + 3 * 2), run_masking_invariance=True,
    )


def test_temporal_transform_reaches_a_neighbouring_frame_and_the_per_frame_one_does_not(rng):
    """An audio assignment changed at frame 3 moves the video weights at frame 2 only with k > 1."""
    video, audio, _, _ = _cross_modal_data(rng)
    changed = audio.copy()
    changed[:, 3] += 5.0
    for k, moves in ((1, False), (3, True)):
        layer = CrossModalNetVLAD(4, 3, transform_kernel_size=k, use_batch_norm=False)
        layer.build((video.shape, audio.shape))
        _randomize(layer, rng)
        for sub in layer.audio_to_video:
            sub.bias.assign(np.ones(sub.bias.shape, "float32"))  # no dead units
            sub.kernel.assign(np.abs(sub.kernel.numpy()))
        before = _np(layer((video, audio), return_assignments=True)[1][0])
        after = _np(layer((video, changed), return_assignments=True)[1][0])
        assert (np.abs(after[:, :, 2] - before[:, :, 2]).max() > 1e-4) == moves, k
        np.testing.assert_allclose(after[:, :, 0], before[:, :, 0], atol=1e-6)  # outside the kernel's reach


def test_returned_assignments_in_a_functional_model(rng):
    video, audio, vm, am = _cross_modal_data(rng)
    inputs = [keras.Input(video.shape[1:]), keras.Input(audio.shape[1:])]
    single, (cross_v, cross_a) = NetVLAD(4)(inputs[0], return_assignments=True), CrossModalNetVLAD(4, 3)(
        tuple(inputs), return_assignments=True)[1]
    model = keras.Model(inputs, [single[1], cross_v, cross_a])
    shapes = [tuple(t.shape) for t in model([video, audio])]
    assert shapes == [(3, 4, 5), (3, 4, 5), (3, 3, 5)]
    assert [tuple(t.shape) for t in model.outputs] == [(None, 4, 5), (None, 4, 5), (None, 3, 5)]


def test_cross_modal_with_zero_correlation_is_two_independent_netvlads(rng):
    video, audio, vm, am = _cross_modal_data(rng)
    layer = CrossModalNetVLAD(4, 3)
    layer.build((video.shape, audio.shape))
    _randomize(layer, rng)
    video_vlad, audio_vlad = NetVLAD(4), NetVLAD(3)
    video_vlad.build(video.shape)
    audio_vlad.build(audio.shape)
    video_vlad.set_weights(layer.video_netvlad.get_weights())
    audio_vlad.set_weights(layer.audio_netvlad.get_weights())
    expected = np.concatenate(
        [_np(video_vlad(video, mask=vm)), _np(audio_vlad(audio, mask=am))], axis=-1
    )
    out = _np(layer((video, audio), mask=(vm, am), correlation=np.zeros(3, "float32")))
    np.testing.assert_allclose(out, expected, rtol=1e-6, atol=1e-7)
    # And the cross term matters when the gate is open.
    opened = _np(layer((video, audio), mask=(vm, am)))
    assert np.max(np.abs(opened - expected)) > 1e-3


def test_gradients_reach_the_transforms_only_when_gated_on(rng):
    video, audio, vm, am = _cross_modal_data(rng)
    layer = CrossModalNetVLAD(4, 3, transform_units=(5,))
    layer.build((video.shape, audio.shape))
    transform_vars = [w for sub in layer.audio_to_video + layer.video_to_audio
                      for w in sub.trainable_weights]
    target = rng.normal(size=(3, 18)).astype("float32")

    def grads(correlation):
        with tf.GradientTape() as tape:
            out = layer((video, audio), mask=(vm, am), correlation=correlation)
            loss = tf.reduce_sum(out * target)
        return [_np(g) if g is not None else None for g in tape.gradient(loss, transform_vars)]

    for g in grads(np.full(3, 0.8, "float32")):
        assert g is not None and np.all(np.isfinite(g)) and np.any(np.abs(g) > 0)
    for g in grads(np.zeros(3, "float32")):
        assert g is None or np.all(g == 0)


@pytest.mark.parametrize(
    "cls, kwargs, message",
    [(NetVLAD, {"num_clusters": 0}, "num_clusters must be >= 1, got 0"),
     (NetVLAD, {"epsilon": 0.0}, "epsilon must be > 0"),
     (NetVLAD, {"output_dim": 0}, "output_dim must be None or >= 1"),
     (CrossModalNetVLAD, {"transform_units": (4, 0)}, "transform_units must be positive"),
     (CrossModalNetVLAD, {"transform_kernel_size": 0}, "transform_kernel_size must be a positive int; got 0")],
)
def test_rejects_bad_arguments(cls, kwargs, message):
    with pytest.raises(ConfigError, match=message):
        cls(**kwargs)
