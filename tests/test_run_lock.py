"""One run per output directory: a live holder refuses a second run; a dead one's lock is taken."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap

import pytest

from cli_runner import run_experiment
from rar_jax.run_lock import LOCK_NAME, OutputDirInUse, hold_output_dir


def test_a_second_holder_is_refused_with_host_and_pid(tmp_path):
    with hold_output_dir(tmp_path):
        with pytest.raises(OutputDirInUse) as refused:
            with hold_output_dir(tmp_path):
                pass
    message = str(refused.value)
    assert f"pid {os.getpid()} on host {socket.gethostname()}" in message
    assert str(tmp_path) in message
    with hold_output_dir(tmp_path):  # Released at the end of the block.
        pass
    assert (tmp_path / LOCK_NAME).read_text() == ""  # A clean exit leaves no holder behind.


def test_the_lock_of_a_killed_process_is_taken_over(tmp_path, caplog):
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import time
        from rar_jax.run_lock import hold_output_dir
        with hold_output_dir({str(tmp_path)!r}):
            print("held", flush=True)
            time.sleep(60)
    """)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(OutputDirInUse, match=f"pid {holder.pid} "):
            with hold_output_dir(tmp_path):
                pass
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    with caplog.at_level("WARNING"), hold_output_dir(tmp_path):
        assert f"taking over the lock left by pid {holder.pid}" in caplog.text
        assert f'"pid": {os.getpid()}' in (tmp_path / LOCK_NAME).read_text()


@pytest.mark.slow
def test_rar_train_on_a_directory_in_use_exits_with_one_line(tmp_path):
    with hold_output_dir(tmp_path):
        result = run_experiment("train.py", "--config=configs/quickstart.py",
                                f"--config.output_dir={tmp_path}", timeout=120)
    assert result.returncode == 2, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    assert f"is in use by pid {os.getpid()} on host {socket.gethostname()}" in result.stderr
    assert not (tmp_path / "config.json").exists()  # Nothing written by the refused run.
