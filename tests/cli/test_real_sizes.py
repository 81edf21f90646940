"""The released YouTube-8M sizes through bin/train and bin/predict, on a few records.

3,862 classes, 300 frames of rgb 1024 + audio 128, NetVLAD with 128 video
and 64 audio clusters, hidden size 1,024, batch 32 (164 M weights): two
training steps, the evaluation, the checkpoint and the export, then the
prediction CSV. Its memory and speed: bench/real_sizes.py and README.
"""
import csv
import os

import numpy as np
import pytest

from tests.cli.binaries import run_bin
from vt_keras.data.yt8m_writers import write_frame_records

CLASSES, FRAMES, RECORDS = 3862, 300, 32


@pytest.mark.slow
def test_real_sizes_train_export_predict(tmp_path):
    rng = np.random.default_rng(0)
    records = str(tmp_path / "train-00000-of-00001.tfrecord")
    write_frame_records(records, [
        {"id": f"real{i:03d}", "labels": sorted(set(rng.integers(0, CLASSES, 3).tolist())),
         # Full-length videos and shorter ones (padding and masks at the real T).
         "rgb": rng.uniform(-2, 2, (frames, 1024)), "audio": rng.uniform(-2, 2, (frames, 128))}
        for i, frames in enumerate(rng.choice([FRAMES, 120, 31], RECORDS))])
    workdir = str(tmp_path / "w")
    trained = run_bin("train", "--config=configs/yt8m/classifier.py:aggregator=netvlad", f"--workdir={workdir}",
                      "--strategy=one", f"--config.data.train_pattern={records}",
                      f"--config.data.eval_pattern={records}", f"--config.data.num_classes={CLASSES}",
                      f"--config.data.max_frames={FRAMES}", "--config.data.taxonomy=",
                      "--config.model.video_aggregator.num_clusters=128",
                      "--config.model.audio_aggregator.num_clusters=64", "--config.model.hidden_size=1024",
                      "--config.train.batch_size=32", "--config.train.num_steps=2", "--config.eval.batch_size=32")
    assert trained.returncode == 0, trained.stderr[-3000:]
    assert "step 2/2" in trained.stdout

    out = tmp_path / "pred.csv"
    predicted = run_bin("predict", f"--export_dir={os.path.join(workdir, 'export')}", f"--data={records}",
                        f"--output={out}")
    assert predicted.returncode == 0, predicted.stderr[-3000:]
    with open(out) as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["VideoId", "LabelConfidencePairs"] and len(rows) == RECORDS + 1
    assert [r[0] for r in rows[1:]] == [f"real{i:03d}" for i in range(RECORDS)]
    for _, pairs in rows[1:]:
        values = pairs.split(" ")
        classes, scores = [int(c) for c in values[0::2]], [float(s) for s in values[1::2]]
        assert len(set(classes)) == 20 and all(0 <= c < CLASSES for c in classes)
        assert scores == sorted(scores, reverse=True) and all(0.0 <= s <= 1.0 for s in scores)
