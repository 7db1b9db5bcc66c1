"""data_prep.console: library chatter off unless verbose, TensorFlow's banners filtered, progress lines."""

import logging
import os
import subprocess
import sys
import textwrap

from data_prep.console import ProgressLog

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

LOGS = textwrap.dedent("""
    import logging, os, sys
    from data_prep.console import configure_console
    configure_console(sys.argv[1] == "verbose")
    logging.getLogger("data_prep.convert").info("ours: progress")
    logging.getLogger("apache_beam.runners.worker").info("beam: bundle done")
    logging.getLogger("apache_beam.runners.portability").warning("beam: no semi_persistent_directory")
    logging.getLogger("tensorflow").info("tf: tracing")
    logging.getLogger("kfp.local").info("kfp: executing")
    logging.getLogger("data_prep.convert").debug("ours: detail")
    print("TF_CPP_MIN_LOG_LEVEL=" + os.environ["TF_CPP_MIN_LOG_LEVEL"])
""")


def _run(code, *args, extra_path=""):
    env = {k: v for k, v in os.environ.items() if k not in ("TF_CPP_MIN_LOG_LEVEL", "CALOFORGE_VERBOSE")}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (REPO, extra_path, os.environ.get("PYTHONPATH", "")) if p)
    return subprocess.run([sys.executable, "-c", code, *args], env=env, capture_output=True, text=True,
                          timeout=120, check=True)


def test_library_chatter_shows_only_with_verbose():
    quiet = _run(LOGS, "quiet")
    assert "ours: progress" in quiet.stderr
    for chatter in ("beam: bundle done", "beam: no semi_persistent_directory", "tf: tracing", "kfp: executing",
                    "ours: detail"):
        assert chatter not in quiet.stderr, chatter
    assert "TF_CPP_MIN_LOG_LEVEL=2" in quiet.stdout
    loud = _run(LOGS, "verbose")
    for line in ("ours: progress", "beam: bundle done", "beam: no semi_persistent_directory", "tf: tracing",
                 "kfp: executing", "ours: detail"):
        assert line in loud.stderr, line
    assert "TF_CPP_MIN_LOG_LEVEL=0" in loud.stdout


def test_tensorflow_start_up_banners_are_filtered_and_other_stderr_kept(tmp_path):
    # A stand-in for TensorFlow's C++ runtime: it writes to file descriptor 2 while it loads.
    (tmp_path / "noisy_native.py").write_text(textwrap.dedent("""
        import os
        os.write(2, b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\\n")
        os.write(2, b"I0000 00:00:1796208453.227002    2504 port.cc:153] oneDNN custom operations are on. "
                    b"You may see slightly different numerical results\\n")
        os.write(2, b"E0000 a real error while loading\\n")
    """))
    code = "import sys; from data_prep.console import import_quietly; import_quietly('noisy_native', sys.argv[1] == 'v')"
    quiet = _run(code, "q", extra_path=str(tmp_path))
    assert quiet.stderr == "E0000 a real error while loading\n"
    loud = _run(code, "v", extra_path=str(tmp_path))
    assert "oneDNN custom operations are on" in loud.stderr and "absl::InitializeLog" in loud.stderr


def test_progress_line_has_rate_and_eta(caplog):
    logger = logging.getLogger("test.progress")
    progress = ProgressLog(logger, "generating showers", 100, "showers", every_s=0.0)
    with caplog.at_level(logging.INFO, logger="test.progress"):
        progress.update(25)
        progress.update(100)  # done: the caller reports the total itself
    assert len(caplog.records) == 1
    line = caplog.records[0].getMessage()
    assert line.startswith("generating showers: 25/100 showers (") and "showers/s, ETA " in line


KFP_TRANSCRIPT = """\
11:03:36.460 - INFO - Executing task \x1b[96m'train-gan'\x1b[0m
11:03:36.460 - INFO - Streamed logs:

    [KFP Executor 2026-12-02 11:03:36,648 INFO]: Looking for component `train_gan` in --component_module_path `/tmp/x.py`
    [KFP Executor 2026-12-02 11:03:36,648 INFO]: Loading KFP component "train_gan" from /tmp/x.py
    [KFP Executor 2026-12-02 11:03:36,649 INFO]: Got executor_input:
    {
        "inputs": {
            "parameterValues": {"preset": "tiny"}
        }
    }
    [KFP Executor 2026-12-02 11:03:51,236 INFO]: step 10/120 epoch 0 0.30 steps/s 4.8 showers/s ETA 6m06s
    Traceback (most recent call last):
    ValueError: TrainConfig.preset='x' is not one of full, small, tiny, fixed_angle
    [KFP Executor 2026-12-02 11:03:59,097 INFO]: Wrote executor output file to /tmp/out.json

11:04:01.014 - INFO - Task \x1b[96m'train-gan'\x1b[0m finished with status \x1b[92mSUCCESS\x1b[0m
11:04:01.015 - INFO - Task \x1b[96m'train-gan'\x1b[0m outputs:
    model: Model( name='model',
                  metadata={'steps': 6.0} )
--------------------------------------------------------------------------------
11:04:18.665 - INFO - Pipeline \x1b[95m'caloforge-3dgan'\x1b[0m finished with status \x1b[92mSUCCESS\x1b[0m
"""


def test_kfp_local_boilerplate_is_dropped_and_stage_lines_and_errors_kept():
    import io

    from pipelines.kfp_console import KfpLocalFilter

    out = io.StringIO()
    stream = KfpLocalFilter(out)
    for chunk in (KFP_TRANSCRIPT[:100], KFP_TRANSCRIPT[100:333], KFP_TRANSCRIPT[333:]):  # any chunking
        stream.write(chunk)
    stream.close_pending()
    lines = out.getvalue().splitlines()
    assert [line for line in lines if "executor_input" in line or "parameterValues" in line] == []
    assert not any("Looking for component" in l or "Wrote executor output" in l or "metadata=" in l for l in lines)
    kept = ("Executing task", "step 10/120 epoch 0 0.30 steps/s 4.8 showers/s ETA 6m06s", "Traceback",
            "ValueError: TrainConfig.preset='x'", "finished with status", "Pipeline")
    for text in kept:
        assert any(text in line for line in lines), text
    assert len(lines) == len(kept)
