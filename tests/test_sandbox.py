"""The sandbox's parts: bubblewrap's mount list, the kernel's environment, the limits and the watchdog.

The adversarial corpus (tests/test_grading.py) shows the whole sandbox at work on real notebooks;
these tests pin down each part on its own, quickly.
"""
import os
import shutil
import subprocess
import sys
import time
import warnings
from pathlib import Path

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


def test_only_the_assigned_gpu_is_bound_in(tmp_path):
    for name in ("nvidia0", "nvidia1", "nvidia2", "nvidiactl", "nvidia-uvm", "nvidia-uvm-tools"):
        (tmp_path / name).touch()
    names = lambda paths: sorted(path.name for path in paths)  # noqa: E731
    control = ["nvidia-uvm", "nvidia-uvm-tools", "nvidiactl"]
    assert names(sandbox.gpu_devices(["1"], dev=tmp_path)) == sorted(control + ["nvidia1"])
    assert names(sandbox.gpu_devices(None, dev=tmp_path)) == sorted(control + ["nvidia0"])
    assert sandbox.gpu_devices(None, dev=tmp_path / "no-gpus") == []


def run_cells(sources, workdir, plan, limits=Limits(), time_limit_s=120):
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(source) for source in sources])
    Path(workdir).mkdir(parents=True, exist_ok=True)
    execution = execute_notebook(nb, workdir, time_limit_s=time_limit_s, sandbox=plan, limits=limits)
    printed = ["".join(output.get("text", "") for output in cell.outputs) for cell in nb.cells]
    return execution, printed


WALK = '''import os
seen = sorted(os.listdir("/"))
files = []
for root, dirs, names in os.walk("/"):
    dirs[:] = [d for d in dirs if os.path.join(root, d) not in SKIPPED]
    files += [os.path.join(root, name) for name in names]
print(seen)
print("\\n".join(files))
'''


def test_the_sandbox_denies_by_default(tmp_path, monkeypatch, sandbox_flags):
    """Listed and walked from inside: the system, Python, the grader, the named folders, and nothing else.
    An earlier run's output folder (hidden reviews with labels) and a cached Hub dataset are not there."""
    from grader.build import ROOT
    old_run = ROOT / "build" / "test-an-earlier-run" / ".grader"
    old_run.mkdir(parents=True, exist_ok=True)
    (old_run / "hidden-set.json").write_text('[{"text": "great", "label": 1}]')
    cache = tmp_path / "hub"
    for name in ("models--org--model", "datasets--fancyzhx--amazon_polarity"):
        (cache / name).mkdir(parents=True)
        (cache / name / "data.txt").write_text(name)
    monkeypatch.setattr(sandbox, "hub_cache", lambda: cache)
    data = tmp_path / "data"
    data.mkdir()
    (data / "train.csv").write_text("label,title,content\n")
    (data / "test.csv").write_text("label,title,content\n1,secret,secret\n")
    work, kernel_tmp = tmp_path / "work", tmp_path / "work" / ".tmp"
    work.mkdir()
    system = [path for path in sandbox.SYSTEM_PATHS if os.path.exists(path)]
    skipped = ["/proc", "/dev", *(path for path in system)]
    allowed = [*map(str, sandbox._existing(sandbox.python_paths())), str(cache / "models--org--model"),
               str(data / "train.csv"), str(work), "/tmp"]
    probe = WALK.replace("SKIPPED", repr(skipped))
    try:
        plan = SandboxPlan(tuple(sandbox_flags), hidden=(data / "test.csv",), readable=(data,))
        execution, printed = run_cells([probe], work, plan)
        assert execution.sandboxed and not execution.errors, execution.errors
        top, *files = printed[0].splitlines()
        tops = {path.strip("/").split("/")[0] for path in allowed}
        assert set(eval(top)) == {"dev", "proc", "tmp", *(p.strip("/") for p in system), *tops}
        outside = [path for path in files if not any(path == root or path.startswith(root.rstrip("/") + "/")
                                                     for root in allowed)]
        assert outside == []
        assert str(cache / "models--org--model" / "data.txt") in files
        assert str(data / "train.csv") in files
        # The negative control: unconfined, the same walk finds the earlier run's hidden set and the cached dataset.
        _, unconfined = run_cells([probe.replace("os.walk(\"/\")", f"os.walk({str(ROOT.parent)!r})")
                                   + f"\nprint(os.listdir({str(cache)!r}))"], tmp_path / "work2", SandboxPlan(None))
        assert str(old_run / "hidden-set.json") in unconfined[0]
        assert "datasets--fancyzhx--amazon_polarity" in unconfined[0]
    finally:
        shutil.rmtree(old_run.parent)


def test_a_relative_working_folder_reaches_bubblewrap_whole(tmp_path, monkeypatch, sandbox_flags):
    monkeypatch.chdir(tmp_path)
    execution, printed = run_cells(["import os; print(os.getcwd())"], Path("relative") / "work",
                                   SandboxPlan(tuple(sandbox_flags)))
    assert not execution.kernel_died and execution.sandboxed
    assert printed[0].strip() == str(tmp_path / "relative" / "work")


def test_dev_shm_is_small_and_the_rest_of_dev_read_only(tmp_path, sandbox_flags):
    limits = Limits(memory_bytes=512 * MB)           # /dev/shm: 64 MB
    fill = "open('/dev/shm/fill', 'wb').write(b'x' * (128 * 1024 * 1024))"
    execution, _ = run_cells([fill, "open('/dev/new-file', 'w')"], tmp_path / "work",
                             SandboxPlan(tuple(sandbox_flags)), limits=limits)
    assert [(error.ename, "space" in error.evalue or "Read-only" in error.evalue) for error in execution.errors] == \
        [("OSError", True), ("OSError", True)]
    # The negative control: unconfined, /dev/shm takes the 128 MB (host memory, which no RSS shows).
    unconfined, _ = run_cells([fill.replace("/dev/shm/fill", f"/dev/shm/grader-test-{os.getpid()}")],
                              tmp_path / "work2", SandboxPlan(None))
    os.unlink(f"/dev/shm/grader-test-{os.getpid()}")
    assert unconfined.errors == []


def test_an_error_of_200_mb_is_cut_everywhere(tmp_path):
    execution, _ = run_cells(["raise ValueError('x' * 200_000_000)"], tmp_path / "work", SandboxPlan(None))
    error = execution.errors[0]
    assert error.ename == "ValueError" and "more characters cut by the grader" in error.evalue
    assert len(error.evalue) < 3_000 and len(error.traceback) < 25_000
    assert len(nbformat.writes(execution.notebook)) < 100_000


def test_a_folder_named_through_a_link_is_there_by_that_name_with_its_hidden_file_still_hidden(tmp_path,
                                                                                                sandbox_flags):
    real = tmp_path / "disk" / "amazon"
    real.mkdir(parents=True)
    (real / "train.csv").write_text("label,title,content\n0,bad,bad\n")
    (real / "test.csv").write_text("label,title,content\n1,secret,secret\n")
    (tmp_path / "data").symlink_to(tmp_path / "disk")
    named = tmp_path / "data" / "amazon"        # what the instructor passed, as the notebook will use it
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        plan = plan_sandbox("require", hidden=[named / "test.csv"], parameters={"LOCAL_DATA_DIR": str(named)})
    execution, printed = run_cells([f"print(open({str(named / 'train.csv')!r}).read().count('bad'))",
                                    f"open({str(named / 'test.csv')!r})"], tmp_path / "work", plan)
    assert printed[0].strip() == "2"
    assert [error.ename for error in execution.errors] == ["FileNotFoundError"]
