r"""Video–text retrieval with the symmetric InfoNCE (CLIP) loss: the baseline every retrieval config builds on.

    bin/train --config=configs/retrieval/info_nce.py --workdir=workdirs/info_nce

A `DualEncoder` (clip and caption towers into one L2-normalised space)
trained with a contrastive loss on video–text records
(docs/video_text_format.md). configs/retrieval/vt_twins.py and crossclr.py
load this config and change the loss. The embedded default data (1200
synthetic videos with planted steps and caption noise) is small, so the sizes
here train in about two minutes on two CPU cores; comments give the papers'
values where they differ.
"""
import ml_collections

from vt_keras.cli.common import load_config_module

trainer = load_config_module("../trainer.py", beside=__file__)


def get_config():
    c = ml_collections.ConfigDict()
    c.task = "retrieval"
    c.seed = 0

    c.data = ml_collections.ConfigDict()
    # Empty train_pattern: the embedded default data (generated once into a cache).
    c.data.train_pattern = ""
    c.data.eval_pattern = ""
    c.data.test_pattern = ""
    c.data.clip_dim = 64  # features per clip (the default data: 64; CrossCLR's experts: 512-2048)
    c.data.max_clips = 16  # clips and captions kept per video (longer videos are truncated)
    c.data.clip_encoding = "float"  # float | quantized (uint8 codes, YouTube-8M style)
    c.data.expert_features = ()  # expert/<name> context features the loss needs (e.g. CrossCLR)
    c.data.shuffle_buffer = 1024  # records in the training shuffle buffer
    c.data.skip_corrupt_records = False  # True: skip corrupt records (and count them) instead of stopping
    # Vocabulary file, one word a line. Empty: built from the training captions by
    # bin/train and written to <cache>/vocabularies/ (the path is then saved here).
    c.data.vocabulary = ""
    c.data.vocabulary_max_size = 30000  # most frequent words kept (0: all)
    c.data.vocabulary_min_count = 2  # a word needs this many occurrences to get its own id

    c.model = ml_collections.ConfigDict()
    # DualEncoder(vocabulary, clip_dim=data.clip_dim, **model.dual_encoder).
    c.model.dual_encoder = dict(
        embedding_dim=128,  # the shared space E
        video_transformer_layers=1,  # Transformer layers over the clips (0: per-clip MLP only)
        text_pooling="mean",  # mean | transformer (one layer over the words, then the mean)
        token_embedding_dim=128,
        num_heads=4,  # must divide embedding_dim and token_embedding_dim
        max_tokens=16,  # words kept per caption
        dropout=0.1,
        num_oov_buckets=8,  # hash buckets for words outside the vocabulary
    )
    # Filled by bin/train: the digest of data.vocabulary, so that a resume with another
    # vocabulary is refused as another model.
    c.model.vocabulary_sha256 = ""

    c.loss = ml_collections.ConfigDict()
    c.loss.name = "info_nce"  # an entry of vt_keras.tasks.retrieval.RETRIEVAL_LOSSES
    # info_nce(video, text, **loss.info_nce) of the pooled embeddings over the global batch.
    # τ: CLIP learns it (ends near 0.01).
    c.loss.info_nce = dict(temperature=0.05)
    # CKA between the video and text towers (Yun et al., LREC 2022): adds -w · cka(video, text,
    # **loss.cka) of the pooled embeddings over the global batch and logs `cka`; 0 turns it off.
    # Paper: w = 0.05 to 0.2, linear kernel (rbf made no significant difference); debiased: the
    # unbiased HSIC estimator (needs batch >= 4).
    c.loss.cka_weight = 0.0
    c.loss.cka = dict(kernel="linear", debiased=False, rbf_threshold=1.0)

    c.train = trainer.train_config(
        batch_size=64,  # global batch: more in-batch negatives make InfoNCE harder (CLIP: 32768)
        num_steps=1000,  # about 67 epochs of the 960 default training videos
        log_every=100,
        eval_every=250)
    c.optimizer = trainer.optimizer_config(
        name="adam", learning_rate=1e-3,
        warmup_steps=100,  # linear warm-up from 0
        decay="cosine",
        plateau_monitor="")  # e.g. "t2v/R@1" to lower the rate on a validation plateau

    c.eval = ml_collections.ConfigDict()
    c.eval.batch_size = 256  # videos embedded per step
    c.eval.block_size = 1024  # text queries ranked at once (memory: block_size x num_videos)
    return c
