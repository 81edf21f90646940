"""Running the `bin/` binaries as a user does, and checking their one-line errors."""
import os
import subprocess
import sys

from tests.conftest import REPO_ROOT


def run_bin(name, *args, env=None, timeout=600):
    """`bin/<name> args...` in a subprocess (TensorFlow's C++ logs quiet; `env` adds variables)."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", **(env or {}))
    return subprocess.run([sys.executable, os.path.join(REPO_ROOT, "bin", name), *args], capture_output=True,
                          text=True, env=env, timeout=timeout)


def assert_one_line_error(proc, *fragments):
    """The run ended with status 2 and one `error: ` line holding every fragment, no traceback."""
    assert proc.returncode == 2, (proc.stdout[-2000:], proc.stderr[-2000:])
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    for fragment in fragments:
        assert fragment in errors[0], errors[0]
