"""The audio–video correlation tower (Goyal et al., Section 3), trained before the CM-G / CM-C classifiers.

    bin/train --config=configs/yt8m/correlation_tower.py --workdir=workdirs/tower
    bin/train --config=configs/yt8m/netvlad_cm_concat.py --workdir=workdirs/nv_cmc \
        --config.model.tower_workdir=workdirs/tower

Positives: video and audio of one video; negatives: video of one and audio of
another video of a different top-level category (built in the graph from
each batch, see vt_keras/tasks/correlation_tower.py). Data, features and
`model.tower` are those of yt8m_base.py: the classifier checks that its
`model.tower` equals the tower workdir's before loading the weights.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from yt8m_base import get_base_config  # noqa: E402


def get_config():
    c = get_base_config()
    c.task = "correlation_tower"
    m = c.model
    # Only `tower` matters here; the classifier keys are dropped so they cannot be mistaken for knobs.
    for key in list(m.keys()):
        if key != "tower":
            del m[key]
    # Each modality: mean over valid frames, ReLU layers, a linear embedding
    # (the paper's "2-3 fully connected layers"); must equal the classifiers' model.tower.
    m.tower = dict(hidden_units=(256, 128), embedding_dim=64, dropout=0.0)

    import ml_collections

    c.loss = ml_collections.ConfigDict()
    c.loss.negative_weight = 2.0  # paper, Figure 9: negatives weighted 2

    c.train.batch_size = 64  # paper: 128; negatives come from the same batch
    c.train.num_steps = 500
    c.optimizer.learning_rate = 1e-3  # paper: Adam 2e-4 at batch 128 on YouTube-8M
    c.optimizer.plateau_monitor = "accuracy"  # the validation pairs' accuracy
    c.optimizer.plateau_mode = "max"

    # Validation negatives: audio rolled by each of these shifts within an
    # evaluation batch, kept where the top-level categories differ.
    c.eval.negative_shifts = (1,)
    del c.eval["top_k"]
    del c.export["top_k"]
    return c
