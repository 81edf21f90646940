"""The knobs every YouTube-8M classifier config shares; variant files pick aggregator and fusion.

Paper defaults (Goyal et al., cross-modal video categorization) are marked
"paper". The embedded default data is small, so the CPU-friendly sizes here are
smaller than the paper's; the comments give the paper's values.
"""
import ml_collections


def get_base_config(aggregator="pool", fusion="late"):
    c = ml_collections.ConfigDict()
    c.task = "yt8m"
    c.seed = 0

    c.data = ml_collections.ConfigDict()
    # Empty train_pattern: the embedded default data (generated once into a cache).
    c.data.train_pattern = ""
    c.data.eval_pattern = ""
    c.data.test_pattern = ""
    c.data.features = (("rgb", 1024), ("audio", 128))  # video first, audio second
    c.data.max_frames = 100  # paper: 300 (YouTube-8M's maximum); the default data has at most 100
    c.data.num_classes = 0  # 0: read from taxonomy.json beside the data; YouTube-8M 2018+: 3862
    c.data.taxonomy = "auto"  # taxonomy.json for per-level metrics ("auto": beside the eval files)
    c.data.l2_normalize = False  # starter code: True (normalises each frame's 1152-d vector)
    c.data.skip_corrupt_records = False

    c.model = ml_collections.ConfigDict()
    c.model.aggregator = aggregator  # pool | netvlad | rnn | transformer
    c.model.fusion = fusion  # early | late | cm_gated | cm_concat
    c.model.pool = dict(mode="mean_max")
    c.model.netvlad = dict(video_clusters=32, audio_clusters=16)  # paper: 128 video / 64 audio
    c.model.rnn = dict(video_clusters=8, audio_clusters=8, encoder=None, encoder_units=128,
                       transform="conv", transform_kernel_size=5)
    c.model.transformer = dict(num_layers=2, num_heads=4, key_dim=32, intermediate_dim=256,
                               dropout=0.1, pooling="mean")  # paper: two cross-modal layers
    c.model.tower = dict(hidden_units=(256, 128), embedding_dim=64)  # correlation tower (cm_* only)
    c.model.tower_workdir = ""  # workdir of a trained correlation tower (required by cm_*)
    c.model.hidden_size = 512
    c.model.dropout = 0.0
    c.model.input_context_gating = True
    c.model.moe_mixtures = 2
    c.model.moe_l2 = 1e-8
    c.model.output_context_gating = False
    # Per-modality learned frame embedding (dense + ReLU) before the fusion; 0: none. The
    # Transformers keep their input width through every block, so they get 256: rgb (1024) and
    # audio (128) at one model width, and a step ~5x cheaper than at 1024 (bench/train_step.py).
    c.model.branch_units = 256 if aggregator == "transformer" else 0
    # CKA alignment of the two branch embeddings (Yun et al.): adds -weight * CKA to the loss and logs
    # `cka`. Needs branch_units > 0. num_samples 0: one mean vector per video and branch; N: N valid
    # frames drawn from the global batch (the paper's sampling). Paper: weight 0.05-0.2, after
    # train.cka_warmup_steps steps of CKA alone.
    c.model.cka = dict(weight=0.0, num_samples=0, kernel="linear", debiased=False)

    c.train = ml_collections.ConfigDict()
    c.train.batch_size = 64  # paper: 128
    c.train.num_steps = 1000  # paper: at most 10 epochs
    c.train.checkpoint_every = 250
    c.train.log_every = 50
    c.train.eval_every = 0  # 0: evaluate at the end only
    c.train.grad_clip_norm = 0.0
    c.train.keep_checkpoints = 3
    # true: TensorFlow's op determinism, so two runs of one command (or a run killed and resumed)
    # end with the same weights; some kernels run slower.
    c.train.deterministic = False
    # float32 | mixed_bfloat16 | mixed_float16 (dynamic loss scaling): the model computes in the
    # half type; variables, softmaxes, norms and losses stay float32.
    c.train.precision = "float32"
    c.train.jit_compile = False  # XLA for the forward and backward pass
    c.train.steps_per_loop = 1  # training steps per host round trip (logs and checks every N steps)
    c.train.cka_warmup_steps = 0

    c.optimizer = ml_collections.ConfigDict()
    c.optimizer.name = "adam"  # paper: Adam
    c.optimizer.learning_rate = 1e-3  # paper: 2e-4 at batch 128 on YouTube-8M
    c.optimizer.warmup_steps = 0
    c.optimizer.warmup_init = 0.0
    c.optimizer.decay = "constant"  # constant | cosine | linear
    c.optimizer.end_factor = 0.0
    c.optimizer.weight_decay = 0.0
    c.optimizer.plateau_monitor = "gap"  # paper: lower the rate on a validation plateau ...
    c.optimizer.plateau_mode = "max"
    c.optimizer.plateau_patience = 2  # ... with patience 2 (needs train.eval_every > 0)
    c.optimizer.plateau_factor = 0.1

    c.eval = ml_collections.ConfigDict()
    c.eval.batch_size = 256
    c.eval.top_k = 20  # GAP@20 as in the YouTube-8M challenge

    c.export = ml_collections.ConfigDict()
    c.export.top_k = 20  # the starter exporter returns the top 20 classes
    return c
