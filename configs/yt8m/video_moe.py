r"""YouTube-8M video-level mixture of experts: the starter code's `MoeModel` on `mean_rgb` + `mean_audio`.

    bin/train --config=configs/yt8m/video_moe.py                      # the embedded data's video-level files
    bin/train --config=configs/yt8m/video_moe.py --workdir=runs/yt8m_moe \
        --config.data.train_pattern='yt8m/video/train*.tfrecord' \
        --config.data.eval_pattern='yt8m/video/validate*.tfrecord' --config.data.num_classes=3862
    bin/train --config=configs/yt8m/video_moe.py --workdir=runs/moe_segments \
        --config.data.segment_labels=true --config.model.init_workdir=workdirs/video_moe \
        --config.train.num_steps=200 --config.train.batch_size=128 --config.optimizer.learning_rate=1e-3

The records are video-level `tf.train.Example`s (`id` or `video_id`,
`labels`, `mean_rgb` 1024 floats, `mean_audio` 128): docs/yt8m_data.md. The
model (`vt_keras.models.video_level`) concatenates the features and
classifies them with `MixtureOfExperts(num_classes, **model.moe)`: per class
a softmax gate over `num_mixtures + 1` experts, the last a dummy that always
predicts 0, and sigmoid experts. configs/yt8m/video_logistic.py is the same
config with the starter code's `LogisticModel` head.

`data.segment_labels=true` trains (and evaluates) on the rated segments of
frame-level files instead, one example per rated (segment, class) pair with
the mean of the segment's 5 frames as `mean_rgb`, `mean_audio` and a label
weight of 1 for the rated class only: docs/yt8m_segments.md. With empty
patterns it reads the embedded data's rated validation split for training
and its rated test split for evaluation; `model.init_workdir` starts from
the weights of a video-level run of this config.

Starter-code defaults are marked "starter".
"""
import ml_collections

from vt_keras.cli.common import load_config_module

trainer = load_config_module("../trainer.py", beside=__file__)

FEATURES = (("mean_rgb", 1024), ("mean_audio", 128))


def get_config():
    c = ml_collections.ConfigDict()
    c.task = "yt8m_video"
    c.seed = 0
    c.data = data_config()
    c.model = model_config("moe", dict(num_mixtures=2,  # starter: 2 mixtures
                                       # starter: l2_penalty=1e-8 under TF1's l2_regularizer, whose loss is
                                       # 1e-8 * sum(w^2) / 2: Keras' L2(5e-9) (models/video_level.py)
                                       l2_penalty=5e-9))
    c.train = train_config()
    c.optimizer = optimizer_config()

    c.eval = ml_collections.ConfigDict()
    c.eval.batch_size = 1024  # videos per inference step
    c.eval.top_k = 20  # GAP@20 as in the YouTube-8M challenge

    c.export = ml_collections.ConfigDict()
    c.export.top_k = 20  # the starter exporter returns the top 20 classes
    return c


def data_config():
    """The video-level records (and, with `segment_labels`, the rated frame-level ones)."""
    d = ml_collections.ConfigDict()
    # Empty train_pattern: the embedded default data's video-level files (generated once into a cache).
    d.train_pattern = ""
    d.eval_pattern = ""
    d.test_pattern = ""
    d.features = FEATURES  # concatenated in this order
    d.num_classes = 0  # 0: read from taxonomy.json beside the data; YouTube-8M 2018+: 3862, 2017: 4716
    d.taxonomy = "auto"  # taxonomy.json for per-level metrics ("auto": beside the eval files)
    d.l2_normalize = False  # true: normalise each video's concatenated features (serving does the same)
    d.skip_corrupt_records = False  # True: skip corrupt records (and count them) instead of stopping
    # true: examples are the rated (segment, class) pairs of frame-level files, each segment the
    # mean of its frames, weighted to its rated class (docs/yt8m_segments.md).
    d.segment_labels = False
    d.max_frames = 300  # segment_labels: frames read per rated video (YouTube-8M's maximum)
    return d


def model_config(head, arguments):
    """`model.head` and its section (the head's constructor arguments); `init_workdir` for warm starts."""
    m = ml_collections.ConfigDict()
    m.head = head  # logistic | moe
    m[head] = arguments
    # The workdir of a run of this same model whose latest weights this run starts from (e.g. a
    # video-level run, before fine-tuning on rated segments); "": from scratch.
    m.init_workdir = ""
    return m


def train_config():
    # The embedded data has 1,600 training videos: 300 steps of 1,024 are about 190 epochs of a
    # model with 0.5 M weights, a minute on 2 CPU cores.
    return trainer.train_config(batch_size=1024,  # starter: 1024
                                num_steps=300,  # starter: 5 epochs of YouTube-8M (about 19,000 steps)
                                checkpoint_every=100,
                                log_every=50)


def optimizer_config():
    return trainer.optimizer_config(name="adam",  # starter: Adam
                                    learning_rate=0.01)  # starter: 0.01 (times 0.95 every 4 M examples)
