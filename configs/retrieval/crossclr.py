r"""Video–text retrieval with CrossCLR (Zolfaghari et al., ICCV 2021): the supplement's presets.

    bin/train --config=configs/retrieval/crossclr.py --workdir=workdirs/crossclr            # youcook2
    bin/train --config=configs/retrieval/crossclr.py:lsmdc --workdir=workdirs/crossclr_lsmdc
    bin/train --config=configs/retrieval/crossclr.py:youcook2_mp ...   # with multiple positives

Presets (`preset=` after the colon, or the bare name): `youcook2` (default),
`lsmdc`, and `youcook2_mp` / `lsmdc_mp` that add the multiple positives of the
supplement's Section 3.1. The loss values come from
`vt_keras.losses.crossclr.PRESETS` (the supplement's Table 1); the attention
heads and dropout of the same table are below. The model and the run are
sized for the embedded synthetic data on two CPU cores (a few minutes), so
the paper's attention width (768 / 384) is noted, not used. The objective is
`L_local + 0.6 · L_global` on clips/captions and on videos/paragraphs (see
vt_keras/tasks/retrieval_crossclr.py and docs/crossclr.md). Everything not
set here is configs/retrieval/info_nce.py's.
"""
from vt_keras.cli.common import load_config_module, parse_config_arg
from vt_keras.losses.crossclr import PRESETS

PRESET_NAMES = ("youcook2", "lsmdc", "youcook2_mp", "lsmdc_mp")
# The model values of the supplement's Table 1 (its loss values are PRESETS').
MODEL_PRESETS = {"youcook2": dict(num_heads=8, dropout=0.05), "lsmdc": dict(num_heads=16, dropout=0.01)}


def get_config(arg=None):
    preset = parse_config_arg(arg, __file__, preset=PRESET_NAMES)["preset"]
    dataset = preset.removesuffix("_mp")
    c = load_config_module("info_nce.py", beside=__file__).get_config()
    c.preset = preset  # which column of the supplement's Table 1

    # The records' per-video expert features: the global loss's raw inputs for proximity.
    c.data.expert_features = ("video_mean", "text_bow")

    # paper: local attention heads (must divide embedding_dim) and dropout.
    c.model.dual_encoder.update(MODEL_PRESETS[dataset])
    # paper: attention dimension 768 (LSMDC) / 384 (YouCook2); 128 keeps a CPU run to minutes.
    c.model.dual_encoder.embedding_dim = 128

    lo = c.loss
    lo.name = "crossclr"
    del lo["info_nce"]  # CrossCLR replaces the InfoNCE term
    # CrossCLRLoss(**loss.crossclr) of the local (clip/caption) term; the global (video/paragraph)
    # term takes the same values without a queue, as in the paper. From PRESETS (paper): τ of
    # the logits (temperature), κ of the anchor weights (weight_temperature), λ of the
    # intra-modality negatives (intra_weight), γ: samples with proximity / max > γ leave the
    # negatives (prune_threshold), and the queue of past clip/caption pairs kept as extra
    # negatives (queue_size 5000 / 3000; the default data gives ~500 pairs per step, so the
    # queue spans ~6-10 steps).
    lo.crossclr = dict(
        PRESETS[dataset],
        # True: the released code's formula (λ on the logit, pruned entries kept as logits of 0).
        reference_compat=False,
        num_positives=0,  # K extra positives per anchor (0: off; see the *_mp presets)
        positive_weight=0.0,  # β of the extra positives
    )
    if preset.endswith("_mp"):
        lo.crossclr.update(PRESETS[f"{dataset}_multi_positive"])  # paper, supplement Section 3.1
    lo.local_weight = 1.0  # weight of the clip/caption loss (paper: 1)
    lo.global_weight = 0.6  # weight of the video/paragraph loss (paper: 0.6)
    # Expert features (names in data.expert_features) of the global loss's proximity; "":
    # derive them from the batch (mean valid clip; bag of words of the valid captions).
    lo.video_features = "video_mean"
    lo.text_features = "text_bow"
    lo.caption_feature_dim = 64  # hash buckets of a caption's bag of words (local text proximity)

    c.train.batch_size = 64  # global videos per step (the clip/caption pairs are ~8x more)
    c.train.num_steps = 600  # 40 epochs of the 960 default training videos
    c.train.eval_every = 45  # three epochs: the plateau scheduler's unit
    c.train.checkpoint_every = 150
    c.train.log_every = 50

    o = c.optimizer
    o.name = "radam"  # paper: RAdam
    o.learning_rate = 7e-4  # paper, both datasets
    o.beta_1 = 0.56  # paper's "momentum 0.56" (RAdam's first-moment decay, as in COOT)
    o.beta_2 = 0.999  # not in the supplement: the usual default
    o.weight_decay = 0.0  # paper
    o.warmup_steps = 60  # paper: 4 warm-up epochs (15 steps per epoch here)
    o.warmup_init = 0.0
    o.decay = "constant"  # paper: no schedule besides warm-up and reduce-on-plateau
    o.end_factor = 1.0
    # Reduce-on-plateau on the validation text→video mean rank: on 120 videos R@1 moves in
    # steps of 0.83 and sits near chance for the first epochs, which would trigger it early.
    o.plateau_monitor = "t2v/MnR"
    o.plateau_mode = "min"
    # paper: patience 6 epochs (cooldown 4, which this scheduler does not have); here
    # 2 evaluations of 3 epochs each.
    o.plateau_patience = 2
    o.plateau_factor = 0.1
    return c
