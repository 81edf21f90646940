"""The CKA synthetic experiment of Yun et al. (LREC 2022, Section 4.1): three methods compared.

    bin/train --config=configs/cka_synthetic.py --workdir=runs/cka_synthetic
    bin/train --config=configs/cka_synthetic.py:cos_cka --workdir=runs/cos_cka   # one method, no sweep

The sweep trains every method into `<workdir>/<method>`, writes
`<workdir>/metrics.json` (`{method: metrics}`), `curves.json` and
`curves.png`. Defaults from the paper are marked "paper"; see docs/cka.md.
"""
import ml_collections

from vt_keras.cli.common import load_config_module, parse_config_arg

trainer = load_config_module("trainer.py", beside=__file__)

METHODS = ("cos_cka", "cos_only", "cka_only")  # the paper's three; the first is a single run's default


def get_config(arg=None):
    c = ml_collections.ConfigDict()
    c.task = "cka_synthetic"
    c.seed = 0  # model initialisation and shuffling; the data has its own data.seed
    # With a method after the file name (configs/cka_synthetic.py:cos_only) only that one runs;
    # without, the sweep trains all three.
    c.method = parse_config_arg(arg, __file__, method=METHODS)["method"]
    c.sweep = None if arg else ml_collections.ConfigDict({"key": "method", "values": METHODS})

    c.data = ml_collections.ConfigDict()
    c.data.num_train = 10000  # paper: 10,000 pairs
    c.data.num_heldout = 2000  # extra pairs from the same distributions, for evaluation
    c.data.dim = 64  # paper: 64
    c.data.num_components = 8  # components of modality B's mixture of normals
    # structured: B is a fixed random function of A (learnable, held-out pairs meaningful);
    # random: the paper's random one-to-one correspondence (only training-pair metrics mean anything).
    c.data.pairing = "structured"
    c.data.seed = 0  # the distributions, the A → B map and every sample
    c.data.eval_pattern = "heldout"  # the pairs are generated in memory; nothing else to name

    c.model = ml_collections.ConfigDict()  # build_encoders(data.dim, **model)
    c.model.hidden_units = (32, 32, 32)  # paper: three layers of 32, each followed by ReLU and batch norm
    # Keras' default 0.99 averages the statistics over ~100 steps (5 epochs here), so early
    # evaluations would see stale ones; 0.9 is PyTorch's default (its momentum=0.1).
    c.model.bn_momentum = 0.9
    # The learnable shift of the last batch norm lets both encoders output one constant
    # vector (cosine 1 for every pair, matched or not); see docs/cka.md.
    c.model.output_center = True

    c.loss = ml_collections.ConfigDict()
    c.loss.cka_weight = 0.1  # paper: λ = 0.1 (cos_cka only)

    c.train = trainer.train_config(
        batch_size=512,  # paper: 512
        num_steps=1000,  # ~50 epochs of 10,000 pairs; every method has levelled off by then
        log_every=100,
        eval_every=20,  # one point of the curves per epoch (~19.5 steps)
        checkpoint_every=1000,
        keep_checkpoints=1,
        # CKA-only warm-up of cos_cka (paper: "a few steps"): one epoch. cos_only has no
        # CKA term and ignores it; cka_only has no cosine term.
        cka_warmup_steps=20)
    c.optimizer = trainer.optimizer_config(
        name="adam", learning_rate=1e-3,  # paper: Adam, 0.001
        beta_1=0.9, beta_2=0.999,  # paper
        epsilon=1e-8,  # PyTorch's default (Keras': 1e-7)
        decay="constant")  # the paper mentions no schedule

    c.eval = ml_collections.ConfigDict()
    c.eval.batch_size = 4096  # rows per inference call when embedding the pairs
    return c
