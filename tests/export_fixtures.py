"""Small classifiers and their exports for tests of serving and bin/predict (no task, no training)."""
import keras
import numpy as np

from vt_keras.export import export_classifier, export_video_classifier

FEATURES = (("rgb", 8), ("audio", 4))
VIDEO_FEATURES = (("mean_rgb", 8), ("mean_audio", 4))
CLASSES = 6
MAX_FRAMES = 7


def frame_model(seed=0):
    """Masked mean of the concatenated frames, then a sigmoid layer: `{rgb, audio, mask}` → `[B, CLASSES]`."""
    keras.utils.set_random_seed(seed)
    inputs = {name: keras.Input((MAX_FRAMES, dim), name=name) for name, dim in FEATURES}
    mask = keras.Input((MAX_FRAMES,), dtype="bool", name="mask")
    frames = keras.layers.Concatenate()(list(inputs.values()))
    pooled = keras.layers.GlobalAveragePooling1D()(frames, mask=mask)
    probs = keras.layers.Dense(CLASSES, activation="sigmoid")(pooled)
    return keras.Model({**inputs, "mask": mask}, probs)


def video_model(seed=0):
    """A sigmoid layer over the concatenated video-level features."""
    keras.utils.set_random_seed(seed)
    inputs = {name: keras.Input((dim,), name=name) for name, dim in VIDEO_FEATURES}
    probs = keras.layers.Dense(CLASSES, activation="sigmoid")(keras.layers.Concatenate()(list(inputs.values())))
    return keras.Model(inputs, probs)


def export_frame_model(export_dir, seed=0):
    model = frame_model(seed)
    export_classifier(model, export_dir, FEATURES, MAX_FRAMES, CLASSES)
    return model


def export_video_model(export_dir, seed=0):
    model = video_model(seed)
    export_video_classifier(model, export_dir, VIDEO_FEATURES, CLASSES)
    return model


def segment_scores(model, frames_by_name):
    """The frame model's scores of 5-frame segments `{name: [S, 5, dim]}`, padded as `predict_features` pads."""
    padded = {name: np.pad(v, [(0, 0), (0, MAX_FRAMES - v.shape[1]), (0, 0)]).astype(np.float32)
              for name, v in frames_by_name.items()}
    count = next(iter(frames_by_name.values())).shape[0]
    mask = np.zeros((count, MAX_FRAMES), bool)
    mask[:, :5] = True
    return np.asarray(model({**padded, "mask": mask}, training=False))
