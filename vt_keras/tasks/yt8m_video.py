"""YouTube-8M video-level classification: `tf.train.Example`s of mean features in, class scores out.

The task of configs/yt8m/video_logistic.py and video_moe.py: the starter
code's `LogisticModel` and `MoeModel` (`vt_keras.models.video_level`) on
the concatenated `mean_rgb` and `mean_audio`, trained with the frame-level
task's multi-label cross-entropy, evaluated with the same metrics (per
taxonomy level too), exported with `serving_default(example_bytes)` for
serialized video-level Examples (`vt_keras.export.export_video_classifier`).
Everything that is not about the records and the model is
`YT8MClassification`'s.

With `data.segment_labels=True` the model trains and evaluates on the rated
segments of frame-level files, each segment read as the mean of its 5
frames (`mean_rgb`, `mean_audio`), which is how `bin/predict --segments`
scores segments with a video-level export.
"""
from vt_keras import export
from vt_keras.data import synthetic, yt8m
from vt_keras.errors import ConfigError
from vt_keras.models.video_level import build_video_level_classifier
from vt_keras.tasks.warm_start import load_workdir_weights
from vt_keras.tasks.yt8m import YT8MClassification
from vt_keras.train.checkpoints import track_variables
from vt_keras.train.task import TASKS

MEAN_PREFIX = "mean_"


@TASKS.register("yt8m_video")
class YT8MVideoClassification(YT8MClassification):
    """Multi-label classification of video-level YouTube-8M records."""

    DEFAULT_DATA = staticmethod(synthetic.ensure_default_video_data)
    DEFAULT_DATA_NAME = "embedded default data (video level)"
    POOLED_SEGMENTS = True
    OTHER_KIND = ("(a frame-level tf.train.SequenceExample)",
                  ("this config reads video-level records; for frame-level files use configs/yt8m/classifier.py, "
                   "or --config.data.segment_labels=true to train on their rated segments"))

    @property
    def segment_features(self):
        """`mean_rgb` is read from the frames of `rgb` (the video-level files' naming)."""
        bad = [name for name, _ in self.features if not name.startswith(MEAN_PREFIX)]
        if bad:
            raise ConfigError(f"data.segment_labels=True reads the frames of each video-level feature "
                              f"'{MEAN_PREFIX}<frame feature>' from the rated frame-level records; data.features "
                              f"has {bad}")
        return tuple((name[len(MEAN_PREFIX):], dim) for name, dim in self.features)

    def build_model(self):
        return track_variables(build_video_level_classifier(self.config.model, self.features, self.num_classes))

    def warm_start(self, model):
        """Loads the weights of `model.init_workdir` (if set): see `load_workdir_weights`."""
        load_workdir_weights(model, self.config)

    def dataset(self, pattern, batch_size, training=False, input_context=None, skip_batches=0):
        if self.segment_labels:
            return self.rated_segment_dataset(pattern, batch_size, training, input_context, skip_batches)
        d = self.config.data
        return yt8m.video_dataset(
            pattern, batch_size, features=self.features, num_classes=self.num_classes, shuffle=training,
            repeat=training, drop_remainder=training, input_context=input_context, seed=self.data_seed,
            skip_corrupt_records=d.skip_corrupt_records, l2_normalize=d.l2_normalize, skip_batches=skip_batches)

    def model_inputs(self, batch):
        return {name: batch[name] for name, _ in self.features}

    def loss_fn(self, model, batch, ctx):
        probs = model(self.model_inputs(batch), training=True)
        return ctx.mean_over_global_batch(self.per_example_loss(batch, probs)), {}

    def export(self, model, export_dir):
        return export.export_video_classifier(
            model, export_dir, features=self.features, num_classes=self.num_classes,
            top_k=self.config.export.top_k, l2_normalize=self.config.data.l2_normalize)
