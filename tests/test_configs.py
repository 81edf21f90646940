"""The config files: one name and one default per setting, each section reaching its constructor whole.

A section's keys must be the arguments of what it configures (so every
argument is reachable from the config and none is renamed on the way), and
the built object must hold the section's values (so the builder adds no
default of its own).
"""
import glob
import inspect
import os
import re
import subprocess
import sys

import keras
import pytest

from tests.conftest import REPO_ROOT
from tests.yt8m_fixtures import classifier_variants, variant_config_file
from vt_keras.cli.common import check_config_overrides, load_config_file, load_config_module
from vt_keras.errors import ConfigError
from vt_keras.layers.alignment import CKAAlignment
from vt_keras.layers.correlation_tower import CorrelationTower
from vt_keras.layers.heads import ContextGating, MixtureOfExperts
from vt_keras.losses.cka import cka
from vt_keras.losses.contrastive import info_nce
from vt_keras.losses.crossclr_queue import CrossCLRLoss
from vt_keras.losses.vt_twins import vt_twins_loss
from vt_keras.models.dual_encoder import DualEncoder
from vt_keras.models.video_classifier import AGGREGATORS, CKA_LAYER, TOWER_LAYER, build_video_classifier
from vt_keras.tasks.cka_synthetic import METHODS, build_encoders

def _defines_get_config(path):
    with open(path) as f:
        return "def get_config(" in f.read()


# Config files (with get_config); configs/trainer.py holds the train and optimizer sections they share.
CONFIG_FILES = sorted(os.path.relpath(p, REPO_ROOT) for p in glob.glob(os.path.join(REPO_ROOT, "configs", "**", "*.py"),
                                                                      recursive=True) if _defines_get_config(p))
# Every config as bin/train takes it: each file, the variants after the colon included.
CONFIGS = ([variant_config_file(name) for name in classifier_variants()]
           + ["configs/yt8m/late_fusion.py", "configs/yt8m/correlation_tower.py", "configs/retrieval/info_nce.py",
              "configs/retrieval/vt_twins.py", "configs/cka_synthetic.py", "configs/cka_synthetic.py:cka_only"]
           + [f"configs/retrieval/crossclr.py:{p}" for p in ("youcook2", "lsmdc", "youcook2_mp", "lsmdc_mp")]
           + ["configs/yt8m/video_logistic.py", "configs/yt8m/video_moe.py"])
# Arguments no config holds: the inputs, what the data or the task decides, functions.
NOT_CONFIG = {"self", "args", "kwargs", "name", "dtype", "reduction", "gather"}


def arguments(fn, passed=()):
    """The argument names of `fn` (a class: its constructor) that a config sets; `passed`: set by the code."""
    fn = fn.__init__ if inspect.isclass(fn) else fn
    return set(inspect.signature(fn).parameters) - NOT_CONFIG - set(passed)


def assert_section_reaches(section, constructor, built_config, skip=(), passed=()):
    """`section` has `constructor`'s arguments, one to one, and the built object holds its values (but `skip`)."""
    assert set(section) == arguments(constructor, passed), constructor.__name__
    for key, value in section.items():
        if key in skip:
            continue
        got = built_config[key]
        if isinstance(value, (tuple, list)):
            value, got = list(value), list(got) if isinstance(got, (tuple, list)) else [got]
        assert got == value, (constructor.__name__, key, got, value)


def test_every_config_file_is_covered_and_none_edits_sys_path():
    assert {c.partition(":")[0] for c in CONFIGS} == set(CONFIG_FILES)
    for path in CONFIG_FILES:
        with open(os.path.join(REPO_ROOT, path)) as f:
            assert "sys.path" not in f.read(), path


def test_configs_load_through_absl_from_any_directory(tmp_path):
    """bin/train's own loader (ml_collections' config flag), from a directory outside the repository."""
    script = tmp_path / "load.py"
    script.write_text("\n".join([
        "import sys",
        "from absl import app",
        "from ml_collections import config_flags",
        "FLAG = config_flags.DEFINE_config_file('config', lock_config=True)",
        "def main(argv):",
        "    print(FLAG.value.task, len(FLAG.value.to_json()))",
        "app.run(main)"]) + "\n")
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=REPO_ROOT)
    for config in ("configs/yt8m/correlation_tower.py", "configs/retrieval/vt_twins.py",
                   "configs/retrieval/crossclr.py:lsmdc_mp", variant_config_file("rnn_cm_gated")):
        proc = subprocess.run([sys.executable, str(script), f"--config={os.path.join(REPO_ROOT, config)}"],
                              capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300)
        assert proc.returncode == 0, (config, proc.stderr[-2000:])
        assert proc.stdout.split()[0] in ("yt8m", "correlation_tower", "retrieval"), proc.stdout


@pytest.mark.parametrize("name", classifier_variants())
def test_classifier_sections_are_their_layers_arguments(name):
    config = load_config_file(variant_config_file(name))
    m = config.model
    model = build_video_classifier(m, config.data.features, 7, 5)
    aggregator = AGGREGATORS.get(m.aggregator)
    layers = {"early": {"early_aggregator": "early_aggregator"},
              "late": {"video_aggregator": "rgb_aggregator", "audio_aggregator": "audio_aggregator"}}.get(
        m.fusion, {"cross_modal_aggregator": "cross_modal_aggregator"})
    for section, layer_name in layers.items():
        cls = aggregator.cross if section == "cross_modal_aggregator" else aggregator.single
        layer = model.get_layer(layer_name)
        assert type(layer) is cls
        assert_section_reaches(m[section], cls, layer.get_config())
    if m.fusion.startswith("cm_"):
        # The frozen copy runs without dropout (see build_correlation_tower).
        assert_section_reaches(m.tower, CorrelationTower, model.get_layer(TOWER_LAYER).get_config(), skip=("dropout",))
    assert_section_reaches(m.moe, MixtureOfExperts, model.get_layer("moe").get_config(), passed=("num_classes",))
    gating = model.get_layer("input_context_gating")
    assert_section_reaches(m.context_gating, ContextGating, gating.get_config(), skip=("kernel_initializer",))
    initializer = keras.initializers.get(m.context_gating.kernel_initializer)
    assert type(gating.kernel_initializer) is type(initializer)
    assert set(m.cka) == arguments(CKAAlignment)


def test_video_level_sections_are_their_heads_arguments():
    from vt_keras.models.video_level import HEADS, build_video_level_classifier, logistic

    moe = load_config_file("configs/yt8m/video_moe.py")
    model = build_video_level_classifier(moe.model, moe.data.features, 7)
    assert_section_reaches(moe.model.moe, MixtureOfExperts, model.get_layer("moe").get_config(),
                           passed=("num_classes",))
    lin = load_config_file("configs/yt8m/video_logistic.py")
    assert set(lin.model.logistic) == arguments(logistic, passed=("num_classes",))
    dense = build_video_level_classifier(lin.model, lin.data.features, 7).get_layer("logistic")
    assert dense.kernel_regularizer.l2 == pytest.approx(lin.model.logistic.l2_penalty)
    assert {lin.model.head, moe.model.head} == set(HEADS.names())
    # The two files differ in the model section only.
    lin.model = moe.model
    assert lin.to_dict() == moe.to_dict()


def test_the_cka_section_reaches_its_layer():
    config = load_config_file(variant_config_file("rnn_late"))
    config.model.update(branch_units=4)
    config.model.cka.update(weight=0.3, num_samples=6, kernel="rbf", debiased=True, rbf_threshold=0.5, seed=3)
    model = build_video_classifier(config.model, config.data.features, 7, 5)
    assert_section_reaches(config.model.cka, CKAAlignment, model.get_layer(CKA_LAYER).get_config())


def test_the_netvlad_walk_is_one_name_and_one_default():
    """`--config.model.video_aggregator.num_clusters`: config → builder → NetVLAD, unchanged."""
    config = load_config_file(variant_config_file("netvlad_late"))
    assert config.model.video_aggregator.num_clusters == 32 and config.model.audio_aggregator.num_clusters == 16
    config.model.video_aggregator.num_clusters = 5
    model = build_video_classifier(config.model, config.data.features, 7, 5)
    assert model.get_layer("rgb_aggregator").num_clusters == 5
    assert model.get_layer("audio_aggregator").num_clusters == 16
    # The cross-modal layer's counts start from the same numbers.
    cross = load_config_file(variant_config_file("netvlad_cm_gated")).model.cross_modal_aggregator
    assert (cross.video_clusters, cross.audio_clusters) == (32, 16)
    # A section the variant does not build is no key of its config, so an override of it is an error.
    assert "video_aggregator" not in load_config_file(variant_config_file("netvlad_cm_gated")).model
    del config.model["video_aggregator"]
    with pytest.raises(ConfigError, match=r"model.video_aggregator is missing .*aggregator=netvlad,fusion=late"):
        build_video_classifier(config.model, config.data.features, 7, 5)


def test_the_tower_config_and_the_classifiers_share_the_tower():
    tower = load_config_file("configs/yt8m/correlation_tower.py")
    classifier = load_config_file(variant_config_file("rnn_cm_concat"))
    assert tower.model.to_dict() == {"tower": classifier.model.tower.to_dict()}
    assert tower.data.to_dict() == classifier.data.to_dict()
    assert set(tower.model.tower) == arguments(CorrelationTower)


def test_retrieval_sections_are_their_functions_arguments():
    info, twins = load_config_file("configs/retrieval/info_nce.py"), load_config_file("configs/retrieval/vt_twins.py")
    crossclr = load_config_file("configs/retrieval/crossclr.py:lsmdc")
    for config in (info, twins, crossclr):
        assert set(config.model.dual_encoder) == arguments(DualEncoder, passed=("vocabulary", "clip_dim"))
        # epsilon: cka()'s guard against 0/0, not a setting of the method.
        assert set(config.loss.cka) == arguments(cka, passed=("x", "y", "mask", "epsilon"))
    # normalize: the DualEncoder's embeddings are unit vectors already.
    assert set(info.loss.info_nce) == arguments(info_nce, passed=("video", "text", "normalize"))
    # seed: the task's generator, seeded with loss.augment_seed.
    assert set(twins.loss.vt_twins) == arguments(vt_twins_loss,
                                                 passed=("video", "text", "video_mask", "text_mask", "seed"))
    assert twins.loss.info_nce.to_dict() == info.loss.info_nce.to_dict()  # the pooled term: info_nce.py's
    assert set(crossclr.loss.crossclr) == arguments(CrossCLRLoss)
    # The DualEncoder holds the section's values.
    model = DualEncoder(["a", "b"], clip_dim=crossclr.data.clip_dim, **crossclr.model.dual_encoder)
    assert_section_reaches(crossclr.model.dual_encoder, DualEncoder, model.get_config(),
                           passed=("vocabulary", "clip_dim"))


def test_cka_synthetic_sections_are_their_functions_arguments():
    config = load_config_file("configs/cka_synthetic.py")
    assert set(config.model) == arguments(build_encoders, passed=("dim",))
    assert set(config.sweep["values"]) == set(METHODS) and config.method in METHODS
    single = load_config_file("configs/cka_synthetic.py:cos_only")
    assert single.method == "cos_only" and single.sweep is None


@pytest.mark.parametrize("config", CONFIGS)
def test_configs_that_read_records_can_skip_corrupt_ones(config):
    """`bin/train --skip_corrupt_records` sets data.skip_corrupt_records: it must be a key of the config."""
    c = load_config_file(config)
    if "train_pattern" in c.data:  # reads record files (cka_synthetic generates its pairs)
        assert c.data.skip_corrupt_records is False, config
    else:
        assert c.task == "cka_synthetic"


def test_bad_arguments_after_the_colon_name_the_choices():
    with pytest.raises(ConfigError, match=r"classifier.py:aggregator=lstm: unknown aggregator 'lstm'; "
                                          r"expected one of pool, netvlad, rnn, transformer"):
        load_config_file("configs/yt8m/classifier.py:aggregator=lstm")
    with pytest.raises(ConfigError, match=r"unknown key 'pooling'; expected aggregator, fusion"):
        load_config_file("configs/yt8m/classifier.py:pooling=max")
    with pytest.raises(ConfigError, match=r"'late' has no '='"):
        load_config_file("configs/yt8m/classifier.py:netvlad,late")
    assert load_config_file("configs/yt8m/classifier.py:netvlad").model.aggregator == "netvlad"


def documented_train_commands():
    """Every `bin/train` command of README.md and docs/*.md, continuation lines joined."""
    commands = []
    for path in [os.path.join(REPO_ROOT, "README.md")] + sorted(glob.glob(os.path.join(REPO_ROOT, "docs", "*.md"))):
        with open(path) as f:
            text = f.read().replace("\\\n", " ")
        for line in text.splitlines():
            for part in line.split("`"):
                if "bin/train" in part and "$" not in part:  # shell loops vary the config: not checked here
                    commands.append((os.path.basename(path), part[part.index("bin/train"):].split("#")[0].split()))
    return commands


def test_documented_train_commands_name_existing_configs_and_keys():
    commands = documented_train_commands()
    assert len(commands) > 20
    for where, argv in commands:
        # What bin/train checks before anything else: the config file, its :arg, every override key.
        check_config_overrides(argv, "configs/yt8m/late_fusion.py")
        assert where and argv[0] == "bin/train"


@pytest.mark.parametrize("config_file", CONFIGS)
def test_train_and_optimizer_sections_are_the_trainers(config_file):
    """Every config has exactly the trainer's keys (configs/trainer.py, their one source of defaults)."""
    trainer = load_config_module("configs/trainer.py")
    config = load_config_file(config_file)
    assert set(config.train) == set(trainer.train_config()), config_file
    assert set(config.optimizer) == set(trainer.optimizer_config()), config_file


def test_every_config_file_the_docs_name_exists():
    """Commands in README, docs/, docstrings and bench/ name config files that exist (a renamed file breaks them)."""
    texts = glob.glob(os.path.join(REPO_ROOT, "docs", "*.md")) + [os.path.join(REPO_ROOT, "README.md")]
    for folder in ("vt_keras", "bench", "configs"):
        texts += glob.glob(os.path.join(REPO_ROOT, folder, "**", "*.py"), recursive=True)
    named = {}
    for path in texts:
        with open(path, encoding="utf-8") as f:
            for name in re.findall(r"configs/[A-Za-z0-9_/]+\.py", f.read()):
                named.setdefault(name, os.path.relpath(path, REPO_ROOT))
    assert "configs/yt8m/classifier.py" in named  # the scan finds the commands
    missing = {name: where for name, where in named.items() if not os.path.exists(os.path.join(REPO_ROOT, name))}
    assert not missing, f"config files named but absent (name: first file naming it): {missing}"


@pytest.mark.parametrize("fusion", ["late", "early", "cm_gated", "cm_concat"])
def test_transformers_train_at_the_papers_rate_with_the_plateau_schedule(fusion):
    """docs/cross_modal.md: at a constant 1e-3 a third of the Transformer runs jumped late in training;
    at the paper's 2e-4, lowered after 2 evaluations without a better validation GAP, none did.
    The plateau only runs when the trainer evaluates during training (eval_every > 0)."""
    c = load_config_file(f"configs/yt8m/classifier.py:aggregator=transformer,fusion={fusion}")
    assert c.optimizer.learning_rate == 2e-4 and c.train.eval_every == 100
    assert c.optimizer.plateau_monitor == "gap" and c.optimizer.plateau_patience == 2
    for other in ("rnn", "netvlad"):  # these train well at 1e-3, constant (no evaluation before the end)
        o = load_config_file(f"configs/yt8m/classifier.py:aggregator={other},fusion={fusion}")
        assert o.optimizer.learning_rate == 1e-3 and o.train.eval_every == 0
    tower = load_config_file("configs/yt8m/correlation_tower.py")
    assert tower.optimizer.learning_rate == 1e-3 and tower.train.eval_every == 0
