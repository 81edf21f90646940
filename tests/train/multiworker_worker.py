"""One worker of the 2-process MultiWorkerMirroredStrategy tests (run as a script).

argv: worker_index port0 port1 train_pattern workdir weights_out.npz overrides_json

`overrides_json` holds dotted config keys for `tests.yt8m_fixtures.tiny_config`
(e.g. `{"train.num_steps": 3}`); `task` may name a task registered in
`tests.train.ordered_task`. The worker prints one line per training log line,
saves its final variables to `weights_out.npz` and prints `done at step N`.
"""
import json
import os
import sys

index, port0, port1, pattern, workdir, out, overrides = sys.argv[1:]
os.environ["TF_CONFIG"] = json.dumps({
    "cluster": {"worker": [f"localhost:{port0}", f"localhost:{port1}"]},
    "task": {"type": "worker", "index": int(index)},
})
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

import numpy as np  # noqa: E402

import tests.train.ordered_task  # noqa: E402,F401  (registers the test tasks)
from tests.yt8m_fixtures import tiny_config  # noqa: E402
from vt_keras.errors import UserError  # noqa: E402
from vt_keras import tasks  # noqa: E402
from vt_keras.train import strategy as strategy_lib  # noqa: E402

strategy = strategy_lib.create_strategy("multi_worker")
config = tiny_config(pattern, **json.loads(overrides))
try:
    results, model = tasks.train(config, workdir, strategy=strategy, log=lambda *a: print(*a, flush=True))
except UserError as e:
    print(f"error: {e}", flush=True)
    sys.exit(2)
np.savez(out, **{v.path: np.asarray(v.numpy()) for v in model.variables})
print("worker", index, "done at step", results["step"], flush=True)
