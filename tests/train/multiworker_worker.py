"""One worker of the 2-process MultiWorkerMirroredStrategy test (run as a script).

argv: worker_index port0 port1 train_pattern workdir weights_out.npz
"""
import json
import os
import sys

index, port0, port1, pattern, workdir, out = sys.argv[1:]
os.environ["TF_CONFIG"] = json.dumps({
    "cluster": {"worker": [f"localhost:{port0}", f"localhost:{port1}"]},
    "task": {"type": "worker", "index": int(index)},
})
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

import numpy as np  # noqa: E402

from tests.yt8m_fixtures import tiny_config  # noqa: E402
from vt_keras.train import loop, strategy as strategy_lib  # noqa: E402

strategy = strategy_lib.create_strategy("multi_worker")
config = tiny_config(pattern, **{"train.num_steps": 3, "train.checkpoint_every": 2})
results, model = loop.train(config, workdir, strategy=strategy, log=lambda *a: print(*a, flush=True))
np.savez(out, *[np.asarray(v.numpy()) for v in model.weights])
print("worker", index, "done at step", results["step"], flush=True)
