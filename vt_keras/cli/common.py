"""What every binary shares: flag parsing, config loading, one-line errors.

A `UserError` (or a flag the user got wrong) ends the binary with one line on
stderr, `error: <what is wrong, what was expected>`, and exit status 2. Any
other exception is a bug and keeps its traceback.
"""
import importlib.util
import os
import re
import sys

from absl import app, flags
from ml_collections import config_flags

from vt_keras.errors import ConfigError, UserError

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIG_DIR = os.path.join(REPO_ROOT, "configs")


def die(message, status=2):
    print(f"error: {message}", file=sys.stderr)
    sys.exit(status)


def load_config_module(path, beside=None):
    """The module of the config file `path`, executed but not registered in `sys.modules`.

    How one config builds on another without editing `sys.path`: a config
    file calls `load_config_module("classifier.py", beside=__file__)` and
    uses that module's `get_config()` or its section helpers.

    Args:
        path: a config `.py` file (relative to the working directory or the
            repository, or to the directory of `beside`).
        beside: the `__file__` of the config that asks; None for a path
            given by a user.

    Returns:
        The module object.

    Raises:
        ConfigError: the file does not exist.
    """
    if beside is not None:
        path = os.path.join(os.path.dirname(os.path.abspath(beside)), path)
    name = resolve_config_path(path)
    module_name = "vt_keras_config_" + re.sub(r"\W", "_", os.path.splitext(os.path.basename(name))[0])
    spec = importlib.util.spec_from_file_location(module_name, name)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except FileNotFoundError as e:
        raise ConfigError(f"--config={path}: no such file; expected a config .py file such as "
                          f"configs/yt8m/classifier.py") from e
    return module


def load_config_file(path):
    """Calls `get_config()` (or `get_config(arg)` for `file.py:arg`) of a config file.

    The file is named in any error.
    """
    name, _, arg = resolve_config_path(path).partition(":")
    module = load_config_module(name)
    if not hasattr(module, "get_config"):
        raise ConfigError(f"--config={path}: the file defines no get_config()")
    return module.get_config(arg) if arg else module.get_config()


def parse_config_arg(arg, config_file, **choices):
    """Parses the part after `:` of `--config=file.py:arg`, big_vision style.

    `arg` is a comma-separated list of `key=value`; a first item without `=`
    is the value of the first key (`crossclr.py:lsmdc` = `crossclr.py:preset=lsmdc`).

    Args:
        arg: the string after `:` (None or "" for every default).
        config_file: the asking config's `__file__`, for the messages.
        **choices: each key the config accepts, with its allowed values; the
            first one is the default.

    Returns:
        `{key: value}` for every key of `choices`.

    Raises:
        ConfigError: an unknown key or value, naming the allowed ones.

    Example:
    >>> parse_config_arg("netvlad,fusion=cm_gated", __file__,
    ...                  aggregator=("pool", "netvlad"), fusion=("late", "cm_gated"))
    {'aggregator': 'netvlad', 'fusion': 'cm_gated'}
    """
    where = f"--config={_display_path(config_file)}:{arg}"
    values = {key: allowed[0] for key, allowed in choices.items()}
    for i, item in enumerate(p.strip() for p in (arg or "").split(",") if p.strip()):
        key, sep, value = item.partition("=")
        if not sep:
            if i:
                raise ConfigError(f"{where}: {item!r} has no '='; expected key=value items separated by commas")
            key, value = next(iter(choices)), item
        key, value = key.strip(), value.strip()
        if key not in choices:
            raise ConfigError(f"{where}: unknown key {key!r}; expected {', '.join(choices)}")
        if value not in choices[key]:
            raise ConfigError(f"{where}: unknown {key} {value!r}; expected one of {', '.join(choices[key])}")
        values[key] = value
    return values


def _display_path(path):
    """`path` relative to the repository when it lies inside, else as given."""
    path = os.path.abspath(path)
    return os.path.relpath(path, REPO_ROOT) if path.startswith(REPO_ROOT + os.sep) else path


def resolve_config_path(path):
    """Accepts paths relative to the working directory or to the repository."""
    name, sep, arg = path.partition(":")
    if not os.path.exists(name) and os.path.exists(os.path.join(REPO_ROOT, name)):
        name = os.path.join(REPO_ROOT, name)
    return name + sep + arg


_OVERRIDE = re.compile(r"^--config\.([A-Za-z0-9_.]+)(=.*)?$")


def check_config_overrides(argv, default_config):
    """Loads the config of `--config=file.py[:arg]` and checks every `--config.a.b=...` key against it.

    Raises `ConfigError` for a missing file, a bad `:arg` (the config's
    `get_config` raises it) or the first override key the config lacks; in
    ml_collections the first would surface as a traceback inside a flag
    error and the last as a bare `AttributeError`.
    """
    config_path = default_config
    given = False
    overrides = []
    for arg in argv[1:]:
        if arg.startswith("--config="):
            config_path, given = arg.split("=", 1)[1], True
            name = resolve_config_path(config_path).partition(":")[0]
            if not os.path.isfile(name):
                raise ConfigError(f"--config={config_path}: no such file; expected a config .py file such as "
                                  "configs/yt8m/classifier.py")
        m = _OVERRIDE.match(arg)
        if m:
            overrides.append((arg, m.group(1)))
    if not overrides and not given:
        return
    if config_path is None:
        raise ConfigError(f"{overrides[0][0]}: no --config given to override")
    config = load_config_file(config_path)
    for arg, dotted in overrides:
        node, walked = config, []
        for part in dotted.split("."):
            keys = list(node.keys()) if hasattr(node, "keys") else []
            if part not in keys:
                where = ".".join(walked) or "the top level"
                raise ConfigError(
                    f"{arg.split('=')[0]}: unknown config key {'.'.join(walked + [part])!r} in {config_path}; "
                    f"keys at {where}: {', '.join(sorted(keys)) or '(none: not a section)'}")
            node = node[part]
            walked.append(part)


def run(main, define_flags, default_config=None):
    """Defines the flags, parses argv and runs `main(argv)` with the error rules above."""
    try:
        if default_config is not None or any(a.startswith("--config") for a in sys.argv[1:]):
            check_config_overrides(sys.argv, default_config)
        define_flags()
    except UserError as e:
        die(str(e))

    _help_for_main(main)

    def parse(argv):
        try:
            return flags.FLAGS(argv)
        except flags.Error as e:
            die(f"{e}; run with --help for the flags")

    def guarded(argv):
        try:
            return main(argv)
        except UserError as e:
            die(str(e))
        except IOError as e:
            if "Configuration is not available" in str(e):
                die(f"--config could not be loaded: {e.__cause__ or e}")
            raise

    app.run(guarded, flags_parser=parse)


def _help_for_main(main):
    """Makes `--help` show the binary's docstring and flags.

    absl's `--help` prints the `__main__` module's docstring and the flags
    registered for `sys.argv[0]`; the `bin/` wrappers hold neither, so both
    are taken from the `vt_keras.cli` module that defines `main` (and the
    config flags that this module defines for it).
    """
    module = sys.modules.get(getattr(main, "__module__", ""), None)
    if module is not None and module.__doc__:
        sys.modules["__main__"].__doc__ = module.__doc__
    for name in {getattr(main, "__module__", ""), __name__}:
        for flag in flags.FLAGS.get_key_flags_for_module(name):
            flags.FLAGS.register_key_flag_for_module(sys.argv[0], flag)


def config_flag(name="config", default=None, help_text="Config file (a .py with get_config()); "
                "override keys as --config.train.batch_size=64."):
    if default is not None:
        default = resolve_config_path(default)
    return config_flags.DEFINE_config_file(name, default, help_text, lock_config=True)


def checked_config(holder):
    """The config of a config flag, with a clear error if the file failed to load."""
    try:
        config = holder.value
        config.keys()
    except (IOError, OSError) as e:
        cause = e.__cause__ or e
        raise ConfigError(f"--config could not be loaded: {cause}") from e
    if config is None:
        raise ConfigError("--config is required: a config .py file such as configs/yt8m/classifier.py")
    return config
