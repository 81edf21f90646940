r"""Video–text retrieval with VT-TWINS: InfoNCE over weakly aligned soft-DTW (S2DTW) of clips and captions.

    bin/train --config=configs/retrieval/vt_twins.py --workdir=workdirs/vt_twins
    bin/plot_alignment --workdir=workdirs/vt_twins --data='<data>/validate-*.tfrecord' --output=alignment.png

Ko et al., "Video-Text Representation Learning via Differentiable Weak
Temporal Alignment" (CVPR 2022). The loss compares each video's clip sequence
with every caption sequence of the global batch by S2DTW (docs/vt_twins.md);
retrieval is then evaluated, as in the paper, with mean-pooled embeddings and
dot products. Everything not set here is configs/retrieval/info_nce.py's.
"""
from vt_keras.cli.common import load_config_module


def get_config():
    c = load_config_module("info_nce.py", beside=__file__).get_config()
    # Clips (and captions) per video, n = m. The paper samples 8 consecutive clip–caption
    # pairs per video; the embedded data has 4 to 12 clips per video, so 12 keeps every clip
    # and caption (nothing truncated, evaluation identical to info_nce's max_clips = 16).
    # The S2DTW cost grows as batch² · (2n + 1)²: n = 8 is about half the time of n = 12.
    c.data.max_clips = 12

    c.loss.name = "vt_twins"
    # vt_twins_loss(video_sequence, text_sequence, masks, **loss.vt_twins):
    c.loss.vt_twins = dict(
        gamma=0.1,  # soft-min smoothing of the neighbourhood smoothing and of soft-DTW (paper: 0.1)
        theta=0.5,  # cost of the interleaved weak-alignment cells: pairs costlier than θ can be skipped (code: 0.5)
        # τ dividing the S2DTW scores in the InfoNCE logits: the supplement's Eq. 12 value. The
        # released code has none (τ = 1), a much softer contrast of scores that span a few units.
        temperature=0.02,
        symmetric=False,  # also video anchors, averaged with the text anchors (paper/code: text only)
        # The released code's temporal augmentation (a likely local shuffle of clips and captions
        # before S2DTW), switched off there. It enumerates every permutation moving no element by
        # more than 2: 400 for n = 8 but 11,854 for n = 12, so use it with data.max_clips = 8.
        augment=False,
        # Divide each pair's S2DTW by its clips plus captions (ours; neither the paper nor the
        # code): scores on a cosine scale, comparable between videos of different lengths.
        length_normalize=False,
    )
    c.loss.augment_seed = 0  # seed of the augmentation's draws (a SeedGenerator checkpointed with the run)
    # The pooled symmetric InfoNCE of info_nce.py (loss.info_nce) added with this weight;
    # 0: VT-TWINS alone, as in the paper.
    c.loss.info_nce_weight = 0.0
    # info_nce.py's CKA keys (cka_weight, cka) still apply and add -w · CKA of the pooled embeddings.
    return c
