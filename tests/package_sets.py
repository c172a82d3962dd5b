"""The package sets the notebooks are promised on (environments/*.txt), built as virtualenvs, and notebooks run there.

Each file of environments/ is one set: Colab's current runtime, an older pinned Colab runtime, the notebooks'
declared minimums. A set is built once into a virtualenv under ``~/.cache/finetune-kit/environments``
(``KIT_ENV_CACHE`` elsewhere), in a folder named by a digest of its file, this Python and the torch pin: an
unchanged file reuses its environment, in this test run and in later ones on this machine; a changed file gets a
new one. Every set uses the local CPU build of torch (``TORCH_PIN``), whatever its runtime ships: it is linked
from one copy (hard links, so it costs neither the copying time nor the disk of a third of a gigabyte per set),
and pip installs the rest of the set around it, without compiling bytecode up front (Python compiles what the
notebooks import). Several sets build at once (``build_all``): pip waits on the network and the disk as much as
on the CPU.

A notebook runs in a set's environment through this process's nbclient: its kernel is the environment's Python
(a kernelspec inside the environment), so the notebook imports the set's packages and nothing of the grader's.

    python tests/package_sets.py [NAME ...]     build the sets (all by default) and print where they are
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SETS_FOLDER = ROOT / "environments"
TORCH_PIN = "torch==2.13.0"    # the local CPU build: a plain or other pin pulls a multi-GB CUDA build
# Changes when the way an environment is built changes, so that no environment of the old recipe is reused.
RECIPE = "3"
KERNEL_NAME = "kit-package-set"


def cache_folder() -> Path:
    return Path(os.environ.get("KIT_ENV_CACHE", Path.home() / ".cache" / "finetune-kit" / "environments"))


class BuildFailed(RuntimeError):
    """pip could not build a package set's environment: the message holds its command and output."""


@dataclass(frozen=True)
class PackageSet:
    name: str                     # the file's name without .txt, e.g. colab-2026-08

    @property
    def requirements(self) -> Path:
        return SETS_FOLDER / f"{self.name}.txt"

    @property
    def key(self) -> str:
        text = "\n".join([RECIPE, TORCH_PIN, sys.version, self.requirements.read_text(encoding="utf-8")])
        return hashlib.sha256(text.encode()).hexdigest()[:12]

    @property
    def folder(self) -> Path:
        return cache_folder() / f"{self.name}-{self.key}"

    @property
    def wheels(self) -> Path:
        """The wheels of every version of this set's file: kept across rebuilds (see ``build``)."""
        return cache_folder() / "wheels" / self.name

    @property
    def python(self) -> Path:
        return self.folder / "bin" / "python"

    @property
    def kernels(self) -> Path:
        return self.folder / "share" / "jupyter" / "kernels"

    @property
    def ready(self) -> bool:
        return (self.folder / "READY").is_file()

    def versions(self) -> dict[str, str]:
        """What the built environment holds, package -> version (``pip freeze`` at the end of the build)."""
        return json.loads((self.folder / "READY").read_text(encoding="utf-8"))["versions"]


def package_sets() -> list[PackageSet]:
    """Every set in environments/, by name."""
    return [PackageSet(path.stem) for path in sorted(SETS_FOLDER.glob("*.txt"))]


# pip's notice for each index folder of this machine's configuration that lacks a package: noise in a build log
IGNORED_LOCATION = re.compile(r"^WARNING: Location '.*' is ignored: it is neither a file nor a directory\.$")


def run(command: list, log: list[str], **kwargs) -> None:
    started = time.monotonic()
    done = subprocess.run([str(part) for part in command], capture_output=True, text=True, **kwargs)
    printed = "".join(line for line in (done.stdout + done.stderr).splitlines(keepends=True)
                      if not IGNORED_LOCATION.match(line.strip()))
    log.append(f"$ {' '.join(map(str, command))}  ({time.monotonic() - started:.0f} s)\n{printed}")
    if done.returncode != 0:
        raise BuildFailed("\n".join(log[-1:]))


def site_packages(venv: Path) -> Path:
    return venv / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" / "site-packages"


def torch_store() -> Path:
    """A virtualenv holding only the local torch build: the one copy every set links its torch from."""
    store = cache_folder() / f"torch-{TORCH_PIN.split('==')[1]}-py{sys.version_info.major}{sys.version_info.minor}"
    with locked(store):
        if not (store / "READY").is_file():
            shutil.rmtree(store, ignore_errors=True)
            log: list[str] = []
            run([sys.executable, "-m", "venv", store], log)
            # compiled once here, so that every set's kernel imports torch without compiling it again
            run([store / "bin" / "python", "-m", "pip", "install", "-q", "--no-deps", TORCH_PIN], log)
            (store / "READY").write_text("\n".join(log), encoding="utf-8")
    return store


def link_torch(store: Path, venv: Path) -> None:
    """Hard-link torch's files from the store into ``venv``: pip then finds torch installed, as if it had been."""
    source, target = site_packages(store), site_packages(venv)
    record = next(source.glob("torch-*.dist-info")) / "RECORD"
    tops = {line.split("/", 1)[0].split(",", 1)[0] for line in record.read_text(encoding="utf-8").splitlines()
            if line and not line.startswith("..")}
    for top in sorted(tops):
        if (source / top).exists():
            subprocess.run(["cp", "-al", str(source / top), str(target / top)], check=True)


class locked:
    """An exclusive lock on a folder's build (a lock file beside it), across processes."""

    def __init__(self, folder: Path):
        self.path = Path(f"{folder}.lock")

    def __enter__(self):
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.handle = open(self.path, "w")
        fcntl.flock(self.handle, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc):
        fcntl.flock(self.handle, fcntl.LOCK_UN)
        self.handle.close()


def build(package_set: PackageSet) -> PackageSet:
    """The set's environment, built now unless an earlier build of the same file is there."""
    with locked(package_set.folder):
        if package_set.ready:
            record_timing({"set": package_set.name, "what": "environment (built before)", "wall_s": 0})
            return package_set
        shutil.rmtree(package_set.folder, ignore_errors=True)   # an interrupted build: start again
        log: list[str] = []
        store = torch_store()
        started = time.monotonic()
        venv = package_set.folder
        run([sys.executable, "-m", "venv", venv], log)
        link_torch(store, venv)
        # The set's wheels are kept in a folder of their own, then installed from it alone: pip's own cache
        # (left on) keeps nothing on a machine whose downloads come with no-store headers, and a rebuild after
        # a change of a few pins then downloads only those. Bytecode is compiled on import, not for every file.
        wheels = package_set.wheels
        wheels.mkdir(parents=True, exist_ok=True)
        run([package_set.python, "-m", "pip", "download", "-q", "--dest", wheels, "-r", package_set.requirements],
            log, cwd=ROOT)
        run([package_set.python, "-m", "pip", "install", "-q", "--no-compile", "--no-index", "--find-links", wheels,
             "-r", package_set.requirements], log, cwd=ROOT)
        write_kernelspec(package_set)
        freeze = subprocess.run([str(package_set.python), "-m", "pip", "freeze", "--all"], capture_output=True,
                                text=True, check=True).stdout
        versions = dict(line.split("==", 1) for line in freeze.splitlines() if "==" in line)
        build_s = round(time.monotonic() - started)
        (venv / "READY").write_text(json.dumps({"versions": versions, "build_s": build_s, "log": log}, indent=1),
                                    encoding="utf-8")
    record_timing({"set": package_set.name, "what": "environment built", "wall_s": build_s})
    remove_older_builds(package_set)
    return package_set


def remove_older_builds(package_set: PackageSet) -> None:
    """The environments of earlier versions of the set's file: no test uses them again."""
    for folder in cache_folder().glob(f"{package_set.name}-*"):
        if re.fullmatch(r"[0-9a-f]{12}", folder.name[len(package_set.name) + 1:]) and folder != package_set.folder:
            shutil.rmtree(folder, ignore_errors=True)
            Path(f"{folder}.lock").unlink(missing_ok=True)


def write_kernelspec(package_set: PackageSet) -> None:
    folder = package_set.kernels / KERNEL_NAME
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "kernel.json").write_text(json.dumps({
        "argv": [str(package_set.python), "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": f"Python ({package_set.name})", "language": "python"}), encoding="utf-8")


def build_all(sets: list[PackageSet], workers: int = 3) -> dict[str, PackageSet | BaseException]:
    """Build ``sets`` at once (``workers`` pips at a time); name -> the set, or why its build failed."""
    torch_store()   # first, alone: every build links from it

    def attempt(package_set):
        try:
            return build(package_set)
        except BaseException as error:   # reported by the tests of that set; the others go on
            return error

    with ThreadPoolExecutor(max_workers=workers) as pool:
        return dict(zip([s.name for s in sets], pool.map(attempt, sets)))


def kernel_environment(package_set: PackageSet, workdir: Path) -> dict:
    """The kernel's environment: offline, the set's virtualenv first on PATH, none of this process's Python paths,
    a datasets cache of its own (versions of datasets do not share one), and no index for pip: an install cell
    that finds something missing fails loudly rather than change the cached environment."""
    env = {name: value for name, value in os.environ.items()
           if name not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV") and not name.startswith("PIP_")}
    env.update(VIRTUAL_ENV=str(package_set.folder), PATH=f"{package_set.folder / 'bin'}{os.pathsep}{env.get('PATH', '')}",
               HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TRANSFORMERS_OFFLINE="1", PIP_NO_INDEX="1",
               HF_DATASETS_CACHE=str(workdir / ".datasets-cache"), MPLBACKEND="agg", TOKENIZERS_PARALLELISM="false",
               PYDEVD_DISABLE_FILE_VALIDATION="1")
    return env


def run_notebook(package_set: PackageSet, nb, workdir: Path, cell_timeout_s: int = 600):
    """Execute ``nb`` (changed in place) in ``workdir`` with the set's Python, carrying on past failing cells."""
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.manager import KernelManager
    from nbclient import NotebookClient

    workdir.mkdir(parents=True, exist_ok=True)
    kernel = KernelManager(kernel_name=KERNEL_NAME,
                           kernel_spec_manager=KernelSpecManager(kernel_dirs=[str(package_set.kernels)]))
    client = NotebookClient(nb, km=kernel, timeout=cell_timeout_s, allow_errors=True,
                            resources={"metadata": {"path": str(workdir)}})
    cpu = {}
    client.on_notebook_complete = lambda **_: cpu.update(kernel_s=process_tree_cpu_s(kernel.provisioner.pid))
    started = time.monotonic()
    try:
        client.execute(env=kernel_environment(package_set, workdir))
    finally:   # nbclient stops only the kernels it started itself: given ``km``, the kernel would outlive the run
        if kernel.has_kernel:
            kernel.shutdown_kernel(now=True)
    record_timing({"set": package_set.name, "what": f"notebook in {workdir.name}",
                   "wall_s": round(time.monotonic() - started, 1), "kernel_cpu_s": cpu.get("kernel_s")})
    return nb


def process_tree_cpu_s(pid: int) -> float | None:
    """CPU seconds a process and its live children have used: the kernel's, read just before it stops."""
    import psutil

    try:
        processes = [psutil.Process(pid)]
        processes += processes[0].children(recursive=True)
    except psutil.Error:
        return None
    total = 0.0
    for process in processes:
        try:
            times = process.cpu_times()
            total += times.user + times.system + times.children_user + times.children_system
        except psutil.Error:
            pass
    return round(total, 1)


def record_timing(entry: dict) -> None:
    """Appended to the JSON-lines file $KIT_MATRIX_TIMINGS, for benchmarks/package_sets.py (nothing otherwise)."""
    path = os.environ.get("KIT_MATRIX_TIMINGS")
    if path:
        with open(path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(entry) + "\n")


def failing_cells(nb) -> dict[str, str]:
    """cell id -> "Error: message" of each code cell whose run raised."""
    return {cell.get("id", f"cell {index}"): f"{output['ename']}: {output['evalue']}"[:500]
            for index, cell in enumerate(nb.cells) if cell.cell_type == "code"
            for output in cell.get("outputs", []) if output.get("output_type") == "error"}


def cell_text(nb, cell_id: str) -> str:
    cell = next((c for c in nb.cells if c.get("id") == cell_id), None)
    return "" if cell is None else "".join(output.get("text", "") for output in cell.get("outputs", []))


def main(argv: list[str]) -> int:
    wanted = [PackageSet(name) for name in argv] or package_sets()
    started = time.monotonic()
    for name, built in build_all(wanted).items():
        if isinstance(built, BaseException):
            print(f"{name}: FAILED\n{built}")
        else:
            print(f"{name}: {built.folder} (transformers {built.versions().get('transformers')})")
    print(f"{time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
