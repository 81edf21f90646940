"""Every layer answers a wrong input shape with `ShapeError`, naming the layer, the input, expected and found."""
import re

import numpy as np
import pytest

from vt_keras.errors import ShapeError, UserError
from vt_keras.layers import (
    AttentionClusters,
    CKAAlignment,
    ContextGating,
    CorrelationTower,
    CrossModalAttentionClusters,
    CrossModalMultiHeadAttention,
    CrossModalNetVLAD,
    CrossModalTransformerEncoder,
    FramePooling,
    MixtureOfExperts,
    NetVLAD,
    TransformerEncoder,
)


def _zeros(*shape):
    return np.zeros(shape, "float32")


FRAMES, POOLED, VIDEO, AUDIO, SHORT_AUDIO = _zeros(2, 5, 4), _zeros(2, 4), _zeros(2, 5, 4), _zeros(2, 5, 3), _zeros(2, 4, 3)
TRANSFORMER = dict(num_layers=1, num_heads=1, key_dim=2, intermediate_dim=4)

# (layer, call arguments, the input named, what is expected, what was found)
CASES = [
    (FramePooling(name="pool"), (POOLED,), {}, "inputs", "[batch, time, features]", "shape (2, 4)"),
    (NetVLAD(2, name="vlad"), (POOLED,), {}, "inputs", "[batch, time, features] with a known feature size",
     "shape (2, 4)"),
    (AttentionClusters(2, name="clusters"), (_zeros(2, 5, 4, 1),), {}, "inputs", "[batch, time, features]",
     "shape (2, 5, 4, 1)"),
    (TransformerEncoder(**TRANSFORMER, name="encoder"), (POOLED,), {}, "inputs", "[batch, time, features]",
     "shape (2, 4)"),
    (MixtureOfExperts(3, name="moe"), (_zeros(2),), {}, "inputs", "[batch, ..., features]", "shape (2,)"),
    (ContextGating(name="gating"), (_zeros(2, 5, 4, 1),), {}, "inputs",
     "[batch, features] or [batch, time, features]", "shape (2, 5, 4, 1)"),
    (CorrelationTower(hidden_units=(2,), embedding_dim=2, name="tower"), ((VIDEO, _zeros(2, 5, 3, 1)),), {},
     "audio", "[batch, features] or [batch, time, features]", "shape (2, 5, 3, 1)"),
    (CorrelationTower(name="tower_single"), (POOLED,), {}, "inputs", "a (video, audio) pair of tensors",
     "shape (2, 4)"),
    (CKAAlignment(name="cka"), ((FRAMES[..., None], FRAMES),), {}, "x_seq", "[batch, time, features] or "
     "[batch, features]", "shape (2, 5, 4, 1)"),
    (CKAAlignment(name="cka_single"), (FRAMES,), {}, "inputs", "a pair (x_seq, y_seq)", "shape (2, 5, 4)"),
]
for cls, kwargs in [(CrossModalNetVLAD, dict(video_clusters=2, audio_clusters=2)),
                    (CrossModalAttentionClusters, dict(video_clusters=2, audio_clusters=2)),
                    (CrossModalMultiHeadAttention, dict(num_heads=1, key_dim=2)),
                    (CrossModalTransformerEncoder, TRANSFORMER)]:
    name = cls.__name__.lower()
    CASES += [
        (cls(**kwargs, name=f"{name}_t"), ((VIDEO, SHORT_AUDIO),), {}, "inputs",
         "video and audio on one time axis (the same T)", "5 video and 4 audio frames"),
        (cls(**kwargs, name=f"{name}_rank"), ((POOLED, AUDIO),), {}, "video", "[batch, time, features]",
         "shape (2, 4)"),
        (cls(**kwargs, name=f"{name}_single"), (VIDEO,), {}, "inputs", "a (video, audio) pair", "shape (2, 5, 4)"),
        (cls(**kwargs, name=f"{name}_mask"), ((VIDEO, AUDIO),), {"mask": np.ones((2, 5), bool)}, "mask",
         "a (video, audio) pair", "one tensor of shape (2, 5)"),
    ]


@pytest.mark.parametrize("layer, args, kwargs, what, expected, found", CASES,
                         ids=[c[0].name for c in CASES])
def test_wrong_shape_raises_shape_error(layer, args, kwargs, what, expected, found):
    with pytest.raises(ShapeError) as info:
        layer(*args, **kwargs)
    assert isinstance(info.value, UserError)  # binaries print it on one line and exit 2
    # Keras adds the call's arguments around an error raised in `call`; the
    # layer's own message is one line of it.
    lines = [re.sub(r"\x1b\[[0-9;]*m", "", line) for line in str(info.value).splitlines()]
    head = f"{layer.name} ({type(layer).__name__}): {what} must be "
    message = next((line for line in lines if line.startswith(head)), str(info.value))
    assert message.startswith(head), message
    assert expected in message, message
    assert re.search(rf"found .*{re.escape(found)}", message), message
