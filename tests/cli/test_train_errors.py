"""`bin/train`'s own flags: mistakes end in one line on stderr and exit status 2; the default workdir."""
import os

from tests.cli.binaries import run_bin


def run_train(*args):
    return run_bin("train", *args, timeout=300)


def one_error_line(proc):
    assert proc.returncode == 2, (proc.stdout[-2000:], proc.stderr[-2000:])
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, proc.stderr[-2000:]
    return errors[0]


def test_a_workdir_that_is_a_file_is_one_line(tmp_path):
    not_a_dir = tmp_path / "notes.txt"
    not_a_dir.write_text("keep me\n")
    line = one_error_line(run_train(f"--workdir={not_a_dir}"))
    assert f"--workdir={not_a_dir} is a file" in line and "expected a directory" in line
    assert not_a_dir.read_text() == "keep me\n"


def test_skip_corrupt_records_on_a_config_without_record_files_is_one_line(tmp_path):
    line = one_error_line(run_train("--config=configs/cka_synthetic.py", f"--workdir={tmp_path / 'w'}",
                                    "--skip_corrupt_records"))
    assert "--skip_corrupt_records" in line and "reads no record files" in line
    assert not (tmp_path / "w").exists()


def test_default_workdir_names_the_variant():
    from vt_keras.cli.train import default_workdir

    assert default_workdir("configs/yt8m/classifier.py:aggregator=netvlad,fusion=cm_gated") == os.path.join(
        "workdirs", "classifier_netvlad_cm_gated")
    assert default_workdir("configs/yt8m/late_fusion.py") == os.path.join("workdirs", "late_fusion")
    assert default_workdir("configs/cka_synthetic.py:cka_only") == os.path.join("workdirs", "cka_synthetic_cka_only")
