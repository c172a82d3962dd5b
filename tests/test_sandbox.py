"""The sandbox's parts: bubblewrap's mount list, the kernel's environment, the limits and the watchdog.

The adversarial corpus (tests/test_grading.py) shows the whole sandbox at work on real notebooks;
these tests pin down each part on its own, quickly.
"""
import os
import subprocess
import sys
import time
import warnings

import nbformat
import pytest

from grader import sandbox
from grader.errors import SandboxUnavailable
from grader.execute import execute_notebook
from grader.sandbox import MB, Confinement, Limits, SandboxPlan, Watchdog, kernel_environment, plan_sandbox


def test_a_hidden_file_goes_and_its_neighbours_stay(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    for name in ("train.csv", "test.csv"):
        (data / name).write_text("label,title,content\n")
    work = tmp_path / "out" / "work" / "ann"
    work.mkdir(parents=True)
    plan = SandboxPlan(("--unshare-all",), hidden=(data / "test.csv", tmp_path / "out"),
                       readable=(data, tmp_path / "out"))
    command = Confinement(work, tmp_path / "k", plan).bwrap_command(Limits())
    text = " ".join(command)
    assert f"--ro-bind {data / 'train.csv'} {data / 'train.csv'}" in text
    assert str(data / "test.csv") not in text
    # The working folder is bound in after the output folder around it is emptied.
    assert command.index(str(work)) > command.index(str(tmp_path / "out"))
    assert command[command.index("--bind") + 2] == "/tmp"     # a private /tmp, inside the working folder
    assert command[-2:] == [str(Limits().max_file_bytes), "--"]


def test_the_kernel_environment_keeps_no_secrets():
    env = kernel_environment({"PATH": "/usr/bin", "HF_TOKEN": "hf_x", "AWS_SECRET_ACCESS_KEY": "k",
                              "GITHUB_TOKEN": "g", "CUDA_VISIBLE_DEVICES": "1", "HOME": "/home/teacher"},
                             sandboxed=True)
    assert env["PATH"] == "/usr/bin" and env["CUDA_VISIBLE_DEVICES"] == "1"
    assert not {"HF_TOKEN", "AWS_SECRET_ACCESS_KEY", "GITHUB_TOKEN"} & set(env)
    assert env["HOME"] == "/tmp" and env["HF_HUB_OFFLINE"] == "1"


def test_without_bubblewrap_auto_warns_loudly_and_require_refuses(monkeypatch):
    monkeypatch.setattr(sandbox, "bubblewrap_flags", lambda: (None, "bubblewrap is not installed"))
    with pytest.warns(sandbox.SandboxUnavailableWarning, match="WITHOUT a sandbox: bubblewrap is not installed"):
        plan = plan_sandbox("auto", hidden=[], parameters={})
    assert plan.flags is None and plan.problem == "bubblewrap is not installed"
    with pytest.raises(SandboxUnavailable, match="not installed"):
        plan_sandbox("require", hidden=[], parameters={})


def test_turning_the_sandbox_off_is_said_too():
    with pytest.warns(sandbox.SandboxUnavailableWarning, match="turned off"):
        assert plan_sandbox("off", hidden=[], parameters={}).flags is None


def test_the_plan_reads_only_path_parameters(tmp_path, sandbox_flags):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        plan = plan_sandbox("require", hidden=[tmp_path / "missing", tmp_path],
                            parameters={"MODEL_NAME": str(tmp_path), "DATASET_ID": "fancyzhx/amazon_polarity",
                                        "LOCAL_DATA_DIR": str(tmp_path), "NUM_EPOCHS": 3})
    assert plan.readable == (tmp_path,)
    assert plan.hidden == (tmp_path,)


def test_grading_from_the_hub_in_the_sandbox_is_warned_about(sandbox_flags):
    with pytest.warns(sandbox.SandboxWithoutNetworkWarning, match="no network"):
        plan_sandbox("auto", hidden=[], parameters={"NUM_EPOCHS": 1})


def test_confine_limits_the_size_of_a_file(tmp_path):
    command = [sys.executable, "-m", "grader.confine", "--max-tasks", "4096", "--max-file-bytes", "1000", "--",
               sys.executable, "-c", "with open('big', 'wb') as f:\n    for _ in range(10):\n        f.write(b'x' * 500)"]
    completed = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert completed.returncode != 0 and "File too large" in completed.stderr


def watch(source: str, limits: Limits, folder) -> Watchdog:
    process = subprocess.Popen([sys.executable, "-c", source], cwd=folder)
    watchdog = Watchdog(limits, folder)
    watchdog.watch(process.pid)
    try:
        process.wait(timeout=60)
    finally:
        watchdog.finish()
    return watchdog


def test_the_watchdog_stops_a_memory_hog(tmp_path):
    hog = "hog = []\nwhile True:\n    hog.append(b'x' * 10_000_000)"
    assert watch(hog, Limits(memory_bytes=300 * MB), tmp_path).exceeded == "used more than 300 MB of memory"


def test_the_watchdog_stops_too_many_processes(tmp_path):
    spawner = "import subprocess, sys, time\nfor _ in range(20):\n" \
              "    subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\ntime.sleep(60)"
    assert watch(spawner, Limits(max_processes=8), tmp_path).exceeded == "started more than 8 processes"


def test_the_watchdog_stops_a_disk_filler(tmp_path):
    filler = "import time\nfor i in range(100):\n    open(f'f{i}', 'wb').write(b'x' * 10_000_000)\n" \
             "    time.sleep(0.05)\ntime.sleep(60)"
    watchdog = Watchdog(Limits(disk_bytes=100 * MB), tmp_path, disk_every_s=0.2)
    process = subprocess.Popen([sys.executable, "-c", filler], cwd=tmp_path)
    watchdog.watch(process.pid)
    started = time.monotonic()
    process.wait(timeout=60)
    watchdog.finish()
    assert watchdog.exceeded == "wrote more than 100 MB to disk" and time.monotonic() - started < 30


def test_a_sandboxed_kernel_sees_no_secret_and_no_hidden_file(tmp_path, monkeypatch, sandbox_flags):
    monkeypatch.setenv("HF_TOKEN", "hf_secret")
    hidden = tmp_path / "hidden.csv"
    hidden.write_text("secret")
    work = tmp_path / "work"
    work.mkdir()
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(source) for source in (
        "import os; print(os.environ.get('HF_TOKEN'), os.path.exists(%r))" % str(hidden),
        "open('mine.txt', 'w').write('ok'); open('/tmp/t', 'w').write('ok'); print(os.getcwd())")])
    if os.path.exists("/etc/shadow"):  # readable by root's uid, which the sandbox keeps when the grader is root
        nb.cells.append(nbformat.v4.new_code_cell("print(repr(open('/etc/shadow').read()))"))
    execution = execute_notebook(nb, work, time_limit_s=120,
                                 sandbox=SandboxPlan(tuple(sandbox_flags), hidden=(hidden,)))
    assert execution.sandboxed and [error.ename for error in execution.errors] == ["PermissionError"] * len(nb.cells[2:])
    assert nb.cells[0].outputs[0].text == "None False\n"
    assert (work / "mine.txt").read_text() == "ok" and (work / ".tmp" / "t").read_text() == "ok"
