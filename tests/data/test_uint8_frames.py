"""Frames stay uint8 until the step: `frame_dataset(dtype="uint8")` + `dequantize_frames` = the float reader, bit for bit."""
import numpy as np
import pytest

from tests.yt8m_fixtures import TINY_CLASSES, TINY_FEATURES, TINY_FRAMES, write_tiny_yt8m
from vt_keras.data import yt8m
from vt_keras.data.quantization import dequantize_frames
from vt_keras.errors import ConfigError


@pytest.fixture(scope="module")
def pattern(tmp_path_factory):
    # Videos of 2 to 8 frames, cut at TINY_FRAMES = 6: padding and truncation both occur.
    return write_tiny_yt8m(str(tmp_path_factory.mktemp("frames")), num_videos=24)


def _batches(pattern, **kwargs):
    ds = yt8m.frame_dataset(pattern, 8, features=TINY_FEATURES, max_frames=TINY_FRAMES, num_classes=TINY_CLASSES,
                            **kwargs)
    return list(yt8m.iterate(ds))


@pytest.mark.parametrize("l2_normalize", [False, True])
def test_codes_dequantized_in_the_step_equal_the_float_reader(pattern, l2_normalize):
    floats = _batches(pattern, l2_normalize=l2_normalize)
    codes = _batches(pattern, dtype="uint8")
    assert len(floats) == len(codes) == 3
    names = [name for name, _ in TINY_FEATURES]
    for f, c in zip(floats, codes):
        assert all(c[name].dtype == "uint8" for name in names)
        np.testing.assert_array_equal(f["mask"], c["mask"])
        np.testing.assert_array_equal(f["labels"], c["labels"])
        values = dequantize_frames([c[name] for name in names], c["mask"], l2_normalize=l2_normalize)
        for name, v in zip(names, values):
            np.testing.assert_array_equal(v.numpy(), f[name].numpy())  # bit for bit, padding included
        assert not f["mask"].numpy().all()  # the comparison covers padded frames


def test_codes_are_the_stored_bytes(pattern):
    from vt_keras.data.quantization import dequantize, quantize

    batch = _batches(pattern, dtype="uint8")[0]
    floats = _batches(pattern)[0]
    mask = batch["mask"].numpy()
    codes = batch["rgb"].numpy()[mask]
    np.testing.assert_array_equal(quantize(dequantize(codes)), codes)
    np.testing.assert_array_equal(dequantize(codes), floats["rgb"].numpy()[mask])


def test_uint8_with_l2_normalize_is_a_clear_error(pattern):
    with pytest.raises(ConfigError, match="l2_normalize=True with dtype='uint8'"):
        _batches(pattern, dtype="uint8", l2_normalize=True)
