"""The trainer's settings (`config.train`) and the optimizer's (`config.optimizer`), with their defaults, once.

Every task's config starts from these two sections and changes only the
values that differ for it (`vt_keras/train/loop.py` reads every key; none
has a default anywhere else):

    from vt_keras.cli.common import load_config_module
    trainer = load_config_module("../trainer.py", beside=__file__)
    c.train = trainer.train_config(batch_size=128, num_steps=2000)
"""
import ml_collections


def train_config(**values):
    """`config.train` with `values` changed (each must be a known key)."""
    t = ml_collections.ConfigDict()
    t.batch_size = 64  # the global batch, over every replica and worker
    t.num_steps = 1000  # total steps; a resumed run stops at the same count
    t.checkpoint_every = 250  # 0: only at the end
    t.keep_checkpoints = 3
    t.log_every = 50  # progress line and TensorBoard scalars
    t.eval_every = 0  # 0: evaluate at the end only
    t.grad_clip_norm = 0.0  # clip the global gradient norm of each step (0: no clipping)
    t.cka_warmup_steps = 0  # steps of the alignment term alone before the main loss (Yun et al.)
    # true: TensorFlow's op determinism, so two runs of one command (or a run killed and
    # resumed) end with the same weights; some kernels run slower.
    t.deterministic = False
    # float32 | mixed_bfloat16 | mixed_float16 (dynamic loss scaling): the model computes in
    # the half type; variables, softmaxes, norms and losses stay float32.
    t.precision = "float32"
    t.jit_compile = False  # XLA for the forward and backward pass (one fused cluster)
    t.steps_per_loop = 1  # training steps per host round trip (logs and NaN checks every N steps)
    _update(t, values, "train")
    return t


def optimizer_config(**values):
    """`config.optimizer` (and the learning-rate schedule) with `values` changed."""
    o = ml_collections.ConfigDict()
    o.name = "adam"  # adam | adamw | radam | sgd
    o.learning_rate = 1e-3
    o.beta_1 = 0.9  # adam, adamw, radam
    o.beta_2 = 0.999
    o.epsilon = 1e-7  # Keras' default (PyTorch's: 1e-8)
    o.momentum = 0.9  # sgd
    o.weight_decay = 0.0  # adamw, radam (decoupled)
    o.warmup_steps = 0  # linear warm-up from warmup_init * learning_rate
    o.warmup_init = 0.0
    o.decay = "constant"  # constant | cosine | linear, after the warm-up
    o.end_factor = 0.0  # the final rate as a fraction of learning_rate
    o.plateau_monitor = ""  # an evaluation metric; "" never lowers the rate on a plateau
    o.plateau_mode = "max"  # max | min: whether a larger monitored value is better
    o.plateau_patience = 2  # evaluations without improvement before lowering (needs train.eval_every)
    o.plateau_factor = 0.1
    _update(o, values, "optimizer")
    return o


def _update(section, values, name):
    for key, value in values.items():
        if key not in section:
            raise KeyError(f"{name}.{key} is not a trainer setting; known: {', '.join(sorted(section))}")
        section[key] = value
