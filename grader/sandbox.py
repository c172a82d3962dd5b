"""Confine a student's kernel with bubblewrap, limit what it may use, and watch it.

Bubblewrap (``bwrap``, the sandbox under Flatpak) puts the kernel in new user, PID, network,
IPC, UTS and cgroup namespaces without root and without a daemon. Inside it:

- there is no network (only a loopback of its own), so the kernel talks to the grader over
  Unix sockets (ZeroMQ's ``ipc`` transport) in a folder bound in for that kernel alone;
- deny by default: the root is empty and read-only; only the system folders (``/usr``, ``/etc``,
  ``/lib``...), Python, the grader's package, the models of the Hugging Face cache and the paths
  the instructor passes as parameters (the course's data and model) are bound in, read-only;
- the student's working folder is writable, ``/tmp`` is a folder of their own inside it, and
  ``/dev/shm`` is a small tmpfs (it is memory that no process's RSS shows);
- a hidden file or folder that lies inside one of those (the hidden set next to ``train.csv``, an
  output folder inside the data folder) is not there at all;
- GPUs stay usable: the NVIDIA control nodes and the assigned GPU's device node are bound in.

``grader.confine`` then sets the limits that the kernel enforces (file size, tasks), and a
``Watchdog`` thread in the grader enforces the rest (memory, processes, disk), killing the whole
sandbox at once when one is exceeded. Without bubblewrap the kernel runs unconfined, with the
watchdog still on, and the grader says so loudly.
"""
from __future__ import annotations

import argparse
import functools
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import psutil

from .errors import SandboxUnavailable, UsageError

GB = 1024 ** 3
MB = 1024 ** 2
SANDBOX_MODES = ("auto", "require", "off")

# Every namespace; caps dropped (they matter when the grader runs as root); the sandbox dies with
# the grader; a new session so the kernel cannot push keystrokes into the grader's terminal.
NAMESPACE_FLAGS = ["--unshare-all", "--unshare-user", "--die-with-parent", "--new-session", "--cap-drop", "ALL"]
NO_NESTED_USERNS = ["--disable-userns"]   # bubblewrap >= 0.8: no user namespaces inside the sandbox
# All of the host a sandbox sees, read-only, besides Python, the grader's package and the folders
# the instructor names: deny by default, so an old output folder or a cache holding labelled test
# reviews is simply not there.
SYSTEM_PATHS = ("/usr", "/etc", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/sys")
# System secrets that root can read even without capabilities (the sandbox keeps root's uid on the
# host when the grader runs as root): covered by /dev/null, which a bind mount makes unopenable (nodev).
SECRET_FILES = ["/etc/shadow", "/etc/shadow-", "/etc/gshadow", "/etc/gshadow-", "/etc/sudoers", "/etc/ssh/ssh_host_*_key"]
# Kept from the grader's environment; anything else (tokens, keys, credentials) stays out.
ENVIRONMENT_KEPT = ("PATH", "LANG", "LANGUAGE", "LC_", "TZ", "TERM", "CUDA_", "NVIDIA_", "LD_LIBRARY_PATH",
                    "OMP_", "MKL_", "OPENBLAS_", "TOKENIZERS_PARALLELISM", "TRANSFORMERS_VERBOSITY",
                    "HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "HF_HUB_DISABLE_", "PYTHONPATH", "PYTHONHASHSEED",
                    "PYTHONWARNINGS", "PYTHONUNBUFFERED", "VIRTUAL_ENV", "PYTORCH_", "MPLBACKEND")


@dataclass(frozen=True)
class Limits:
    """What one notebook may use. The defaults fit a DistilBERT fine-tuning run on a GPU machine."""

    memory_bytes: int = 12 * GB       # resident memory of all the kernel's processes together
    max_processes: int = 256
    max_file_bytes: int = 4 * GB      # any single file it writes
    disk_bytes: int = 20 * GB         # everything in its working folder, /tmp included

    @property
    def shm_bytes(self) -> int:
        """The size of /dev/shm, memory that no process's RSS shows: a small, fixed share of the limit."""
        return max(64 * MB, min(GB, self.memory_bytes // 8))

    @property
    def max_tasks(self) -> int:
        """The kernel-enforced cap on tasks, threads included: a backstop for the process count."""
        return max(4096, 16 * self.max_processes)


# A size as an instructor writes it on the command line
SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]?)i?B?\s*$", re.IGNORECASE)


def size(text: str) -> int:
    """A size such as 500M, 12G, 1.5GB or 1048576 (bytes), in binary units."""
    match = SIZE.match(text)
    if not match:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (examples: 500M, 12G)")
    return int(float(match[1]) * 1024 ** " KMGT".index((match[2] or " ").upper()))


def size_text(size: int) -> str:
    return f"{size / GB:.1f} GB" if size >= GB else f"{size / MB:.0f} MB"


# --- is bubblewrap usable here? ------------------------------------------------------------
@functools.cache
def bubblewrap_flags() -> tuple[list[str] | None, str]:
    """The namespace flags this machine's bubblewrap accepts, or None with the reason it cannot run."""
    bwrap = shutil.which("bwrap")
    if bwrap is None:
        return None, "bubblewrap is not installed (Debian/Ubuntu: apt install bubblewrap; Fedora: dnf install bubblewrap)"
    problem = ""
    for flags in (NAMESPACE_FLAGS + NO_NESTED_USERNS, NAMESPACE_FLAGS):
        try:
            probe = subprocess.run([bwrap, "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc", *flags, "true"],
                                   capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.TimeoutExpired) as error:
            return None, f"bubblewrap does not start: {error}"
        if probe.returncode == 0:
            return flags, ""
        problem = (probe.stderr.strip().splitlines() or ["no message"])[-1]
    return None, (f"bubblewrap cannot create its namespaces here ({problem}); unprivileged user namespaces "
                  "may be disabled (sysctl kernel.unprivileged_userns_clone / user.max_user_namespaces)")


def _under(path: Path, roots) -> bool:
    return any(path == root or root in path.parents for root in roots)


def _existing(paths) -> list[Path]:
    found = []
    for path in paths:
        if path is None:
            continue
        path = Path(os.path.realpath(path))
        if path.exists() and path not in found:
            found.append(path)
    return found


def _outermost(paths: list[Path]) -> list[Path]:
    """The paths not inside another one of them: binding those covers the rest."""
    return [path for path in paths if not _under(path, [other for other in paths if other != path])]


def hub_cache() -> Path | None:
    try:
        from huggingface_hub import constants
        return Path(constants.HF_HUB_CACHE)
    except ImportError:
        return None


def hub_models() -> list[Path]:
    """The models in the Hugging Face cache, never its datasets (the public test split lives there)."""
    cache = hub_cache()
    return sorted(cache.glob("models--*")) if cache is not None and cache.is_dir() else []


def python_paths() -> list[Path]:
    """What the kernel's Python needs to read: its installation and the grader's package, not its repository."""
    import site
    return [Path(sys.prefix), Path(sys.base_prefix), Path(sys.exec_prefix), Path(sys.executable).resolve().parent,
            *map(Path, site.getsitepackages()), Path(__file__).resolve().parent]


def gpu_minor_numbers() -> dict[str, str]:
    """GPU index (as CUDA_VISIBLE_DEVICES counts in PCI order) -> the minor number of its /dev/nvidiaN."""
    try:
        listing = subprocess.run(["nvidia-smi", "--query-gpu=index,minor_number", "--format=csv,noheader"],
                                 capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.TimeoutExpired):
        return {}
    return dict(line.replace(" ", "").split(",", 1) for line in listing.splitlines() if "," in line)


def gpu_devices(assigned: list[str] | None, dev: Path = Path("/dev")) -> list[Path]:
    """The NVIDIA control nodes and the device node of each assigned GPU only (the first: none assigned)."""
    every_gpu = sorted(path for path in dev.glob("nvidia[0-9]*"))
    if not every_gpu:
        return []
    control = [path for path in dev.glob("nvidia*") if path not in every_gpu]
    if assigned is None:
        chosen = every_gpu[:1]     # one GPU per sandbox, even when nobody said which
    else:
        minors = gpu_minor_numbers()
        chosen = [dev / f"nvidia{minors.get(gpu, gpu)}" for gpu in assigned]
    return sorted(control) + [path for path in chosen if path.exists()]


def system_mounts() -> list[str]:
    """The operating system, read-only: what any Python kernel needs, and no user's files."""
    args = []
    for name in SYSTEM_PATHS:
        path = Path(name)
        if path.is_symlink():                     # merged /usr: /lib -> usr/lib
            args += ["--symlink", os.readlink(path), name]
        elif path.is_dir():
            args += ["--ro-bind", name, name]
    for pattern in SECRET_FILES:
        for secret in sorted(Path("/").glob(pattern.lstrip("/"))):
            args += ["--ro-bind", "/dev/null", str(secret)]
    return args


def hiding_mounts(exposed: list[Path], hidden: list[Path]) -> tuple[list[str], list[Path]]:
    """Hide what lies inside an exposed folder: a hidden folder is emptied; a hidden file's folder is
    emptied and its other entries bound back. Returns the arguments and the folders emptied."""
    hidden = [path for path in _existing(hidden) if _under(path, exposed)]
    hidden_files = {path for path in hidden if not path.is_dir()}
    emptied = [*(path for path in hidden if path.is_dir()), *sorted({path.parent for path in hidden_files})]
    args = []
    for folder in emptied:
        args += ["--tmpfs", str(folder)]
        if folder in {path.parent for path in hidden_files}:
            for sibling in sorted(set(folder.iterdir()) - hidden_files):
                args += ["--ro-bind", str(sibling), str(sibling)]
    return args, emptied


def alias_links(given: list[Path], exposed: list[Path]) -> list[str]:
    """A path named through a link (``/data`` -> ``/mnt/disk/data``) is bound at its real place; the name
    the notebook uses becomes a link to it inside, so what is hidden in the real folder stays hidden."""
    args, done = [], set()
    for path in given:
        if path is None or not os.path.exists(path):
            continue
        alias, real = Path(os.path.abspath(path)), Path(os.path.realpath(path))
        if alias != real and alias not in done and not _under(alias, exposed):
            args += ["--symlink", str(real), str(alias)]
            done.add(alias)
    return args


def sandbox_prefix(plan: "SandboxPlan", readable: list[Path], writable: list[Path], shm_bytes: int,
                   gpus: list[str] | None = None, tmpdir: Path | None = None,
                   placed: dict[str, Path] | None = None) -> list[str]:
    """bubblewrap's arguments, deny by default: the system, Python, the grader's package and ``readable``
    read-only; ``writable`` and ``tmpdir`` (as /tmp, else a small tmpfs) writable; ``placed`` files
    read-only at the paths given inside; nothing else exists inside."""
    given = [*python_paths(), *readable]
    readable = _outermost(_existing(given))
    args = ["bwrap", *system_mounts(), "--proc", "/proc", "--dev", "/dev", "--size", str(shm_bytes),
            "--tmpfs", "/dev/shm"]
    for device in gpu_devices(gpus):
        args += ["--dev-bind", str(device), str(device)]
    # /tmp first: what is bound below it afterwards (a data folder under /tmp) stays visible.
    if tmpdir is not None:
        args += ["--bind", str(tmpdir), "/tmp"]
    else:
        args += ["--size", str(shm_bytes), "--tmpfs", "/tmp"]
    for path in readable:
        args += ["--ro-bind", str(path), str(path)]
    hide, emptied = hiding_mounts([*map(Path, SYSTEM_PATHS), *readable], plan.hidden)
    args += hide
    for path in writable:
        args += ["--bind", str(path), str(path)]
    args += alias_links(given, [*map(Path, SYSTEM_PATHS), *readable, *writable])
    for inside, outside in (placed or {}).items():
        args += ["--ro-bind", str(outside), inside]
    for path in ["/", "/dev", *map(str, emptied)]:
        args += ["--remount-ro", str(path)]
    uid = os.getuid() or 65534   # as root, the sandbox runs as nobody, without capabilities
    return args + [*plan.flags, "--uid", str(uid), "--gid", str(os.getgid() or 65534)]


@dataclass
class Confinement:
    """What one student's kernel may see and touch."""

    workdir: Path                 # writable: the notebook's own folder
    kernel_dir: Path              # writable: the kernel's connection file and sockets, nothing else
    plan: "SandboxPlan"           # bubblewrap's flags; what is hidden, and what stays readable
    gpus: list[str] | None = None   # the GPUs assigned to this job (CUDA_VISIBLE_DEVICES)

    def __post_init__(self):
        # bubblewrap takes paths as given: a relative one would name a folder inside the sandbox.
        self.workdir = Path(os.path.realpath(self.workdir))
        self.kernel_dir = Path(os.path.realpath(self.kernel_dir))

    @property
    def tmpdir(self) -> Path:
        return self.workdir / ".tmp"

    def bwrap_command(self, limits: Limits) -> list[str]:
        self.tmpdir.mkdir(parents=True, exist_ok=True)
        args = sandbox_prefix(self.plan, [*hub_models(), *self.plan.readable], [self.workdir, self.kernel_dir],
                              limits.shm_bytes, self.gpus, tmpdir=self.tmpdir)
        # ipykernel exits when its parent looks gone, as it always does from inside a PID namespace;
        # 1 turns that poll off, and --die-with-parent does its job.
        args += ["--setenv", "JPY_PARENT_PID", "1", "--chdir", str(self.workdir)]
        return args + [sys.executable, "-P", "-m", "grader.confine", "--max-tasks", str(limits.max_tasks),
                       "--max-file-bytes", str(limits.max_file_bytes), "--"]


HIDDEN_SET_INSIDE = "/run/grader/hidden-set.json"   # where the model check reads the hidden set
TEST_SPLIT_INSIDE = "/run/grader/test-split.json"   # ... and a student's re-derived test split (verify mode)
COURSE_TOKENIZER_INSIDE = "/run/grader/course-tokenizer"   # ... and the course's tokenizer, when it needs it


def verifier_prefix(plan: "SandboxPlan", workdir: Path, hidden_set_file: Path, limits: Limits,
                    gpus: list[str] | None = None, readable: list[Path] = (),
                    placed: dict[str, Path] | None = None) -> list[str]:
    """The model check's sandbox: the student's folder and the hidden set, read-only, no network,
    nothing writable but a small /tmp. It runs the grader's code only, on files the student made.
    ``readable``: more folders, read-only at their own paths (the course's base model); ``placed``: more
    files, read-only at the paths given inside."""
    args = sandbox_prefix(plan, [Path(os.path.realpath(workdir)), *readable], [], limits.shm_bytes, gpus,
                          placed={HIDDEN_SET_INSIDE: Path(os.path.realpath(hidden_set_file)), **(placed or {})})
    return args + ["--chdir", "/"]


def kernel_environment(base: dict | None, sandboxed: bool) -> dict:
    """The kernel's environment: the grader's, less its secrets, offline, with writable caches."""
    base = dict(os.environ if base is None else base)
    env = {name: value for name, value in base.items() if name.startswith(ENVIRONMENT_KEPT)}
    env.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", PYDEVD_DISABLE_FILE_VALIDATION="1")
    cache = hub_cache()
    if cache is not None:
        env["HF_HUB_CACHE"] = str(cache)
    if "CUDA_VISIBLE_DEVICES" in env:   # the grader numbers GPUs as nvidia-smi does, in PCI order
        env["CUDA_DEVICE_ORDER"] = "PCI_BUS_ID"
    if sandboxed:  # home is empty and read-only inside: caches and settings go to the private /tmp
        env.update(HOME="/tmp", TMPDIR="/tmp", HF_DATASETS_CACHE="/tmp/.cache/huggingface/datasets")
    else:
        env.update({name: base[name] for name in ("HOME", "TMPDIR", "USER") if name in base})
    return env


@dataclass(frozen=True)
class SandboxPlan:
    """How a batch's kernels are confined: bubblewrap's flags, and what they may and may not see."""

    flags: tuple[str, ...] | None         # None: no sandbox (unavailable, or turned off)
    hidden: tuple[Path, ...] = ()         # the output folder, the submissions, the answer key, the hidden set
    readable: tuple[Path, ...] = ()       # the course's data and model, from the instructor's parameters
    problem: str = ""                     # why there is no sandbox


class SandboxUnavailableWarning(UserWarning):
    """Student notebooks are about to run without a sandbox."""


class SandboxWithoutNetworkWarning(UserWarning):
    """Sandboxed notebooks are about to reach for the Hub, which they cannot."""


def plan_sandbox(mode: str, hidden, parameters: dict) -> SandboxPlan:
    """Bubblewrap when it works here; ``require`` refuses to go on without it, ``auto`` warns loudly."""
    if mode not in SANDBOX_MODES:
        raise UsageError(f"--sandbox must be one of {', '.join(SANDBOX_MODES)}, not {mode!r}")
    if mode == "off":
        problem = "turned off (--sandbox off)"
    else:
        flags, problem = bubblewrap_flags()
        if flags is not None:
            readable = [Path(value) for value in parameters.values()
                        if isinstance(value, str) and value.startswith(("/", ".")) and Path(value).exists()]
            if not parameters.get("LOCAL_DATA_DIR"):
                warnings.warn("the notebooks will load their data from the Hugging Face Hub, but sandboxed kernels "
                              "have no network: pass local copies with -p LOCAL_DATA_DIR=... -p MODEL_NAME=...",
                              SandboxWithoutNetworkWarning, stacklevel=2)
            # Kept as named (not resolved): the notebook uses these names, which may go through links.
            named = [Path(os.path.abspath(path)) for path in readable]
            return SandboxPlan(tuple(flags), tuple(_existing(hidden)), tuple(dict.fromkeys(named)))
        if mode == "require":
            raise SandboxUnavailable(f"--sandbox require, but {problem}")
    warnings.warn(f"student notebooks will run WITHOUT a sandbox: {problem}. Their code can read and change "
                  "anything your account can, the hidden set included. Resource limits still apply.",
                  SandboxUnavailableWarning, stacklevel=2)
    return SandboxPlan(flags=None, problem=problem)


# --- the watchdog ---------------------------------------------------------------------------
def folder_bytes(folder: Path) -> int:
    total = 0
    for root, dirs, files in os.walk(folder):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_blocks * 512
            except OSError:
                pass
    return total


class Watchdog:
    """Polls a kernel's process tree and folder; past a limit, kills the whole tree and says why."""

    def __init__(self, limits: Limits, folder: Path, poll_s: float = 0.1, disk_every_s: float = 2.0):
        self.limits, self.folder, self.poll_s, self.disk_every_s = limits, folder, poll_s, disk_every_s
        self.exceeded = ""            # what was exceeded, in words for the student
        self._root: psutil.Process | None = None
        self._pid: int | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="grader-watchdog", daemon=True)

    def watch(self, pid: int) -> None:
        """Hold process ``pid`` and what it starts from now on. Never raises: the pid is kept even when
        psutil cannot open the process (out of file descriptors), so that ``finish`` still kills it."""
        self._pid = pid
        try:
            self._root = psutil.Process(pid)
            self._thread.start()
        except (psutil.Error, OSError, RuntimeError):   # RuntimeError: no thread to be had
            pass

    def _tree(self) -> list[psutil.Process]:
        if self._root is None:
            return []
        try:
            return [self._root, *self._root.children(recursive=True)]
        except (psutil.Error, OSError):
            return []

    def _run(self) -> None:
        next_disk_check = 0.0
        while not self._stop.wait(self.poll_s):
            tree = self._tree()
            if not tree:
                return
            if len(tree) > self.limits.max_processes:
                self.stop_kernel(f"started more than {self.limits.max_processes} processes")
                return
            memory = 0
            for process in tree:
                try:
                    memory += process.memory_info().rss
                except psutil.Error:
                    pass
            if memory > self.limits.memory_bytes:
                self.stop_kernel(f"used more than {size_text(self.limits.memory_bytes)} of memory")
                return
            if time.monotonic() >= next_disk_check:
                next_disk_check = time.monotonic() + self.disk_every_s
                if folder_bytes(self.folder) > self.limits.disk_bytes:
                    self.stop_kernel(f"wrote more than {size_text(self.limits.disk_bytes)} to disk")
                    return

    def stop_kernel(self, reason: str) -> None:
        """Kill the kernel and everything it started. The first reason given is the one kept."""
        if reason and not self.exceeded:
            self.exceeded = reason
        self._kill_tree()

    def _kill_tree(self) -> None:
        # The sandbox's root first: bubblewrap's --die-with-parent then takes its whole PID namespace.
        for _ in range(3):
            tree = self._tree()
            if not tree:
                break
            for process in tree:
                try:
                    process.kill()
                except (psutil.Error, OSError):
                    pass
            time.sleep(0.05)
        if self._root is None and self._pid is not None:   # psutil never held it: the pid alone, then
            try:
                os.kill(self._pid, signal.SIGKILL)
            except OSError:
                pass

    def finish(self) -> None:
        """Stop watching; nothing the kernel started may outlive it."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        if self._pid is not None:
            self._kill_tree()
