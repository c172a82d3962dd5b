"""Execute a notebook headless with nbclient: a fresh, confined kernel, a wall-clock limit, limits.

Execution carries on past errors (every cell runs, as "Run all" would with errors ignored) so
the record shows every failing cell, and it never raises for what the notebook does: a timeout,
a dead kernel, an exceeded limit or a failing cell are all facts in the returned ``Execution``.
"""
from __future__ import annotations

import asyncio
import atexit
import itertools
import json
import os
import re
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellTimeoutError, DeadKernelError
from jupyter_client.manager import AsyncKernelManager

from .cancel import Cancellation
from .contract import CONTRACT_TAG
from .parameters import INJECTED_TAG
from .results import CellError, cell_location
from .sandbox import Confinement, Limits, SandboxPlan, Watchdog, kernel_environment, size_text

ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
GRADER_TAGS = {INJECTED_TAG, CONTRACT_TAG}
# An error is output too: a notebook can raise a 200 MB message. These caps hold for the executed
# notebook, the result and the feedback alike, since all three are made from the capped output.
MAX_ENAME_CHARS = 200
MAX_EVALUE_CHARS = 2_000
MAX_TRACEBACK_CHARS = 20_000
MAX_ERRORS_KEPT = 20          # cells' errors kept in a result; the executed notebook has them all


def strip_ansi(text: str) -> str:
    return ANSI_ESCAPE.sub("", text)


def clip(text, limit: int) -> str:
    text = text if isinstance(text, str) else str(text)
    return text if len(text) <= limit else f"{text[:limit]}... [{len(text) - limit:,} more characters cut by the grader]"


def capped_error(content: dict) -> dict:
    """An error message with its name, value and traceback cut to the grader's limits (the traceback's end kept)."""
    lines, kept, size = list(content.get("traceback") or []), [], 0
    for line in reversed(lines):
        line = clip(line, MAX_TRACEBACK_CHARS // 4)
        if size + len(line) > MAX_TRACEBACK_CHARS:
            kept.append(f"[{len(lines) - len(kept)} traceback line(s) cut by the grader]")
            break
        kept.append(line)
        size += len(line)
    return {**content, "ename": clip(content.get("ename", ""), MAX_ENAME_CHARS),
            "evalue": clip(content.get("evalue", ""), MAX_EVALUE_CHARS), "traceback": kept[::-1]}


def is_grader_cell(cell) -> bool:
    return bool(GRADER_TAGS & set(cell.get("metadata", {}).get("tags", [])))


def student_cell_number(nb: nbformat.NotebookNode, index: int) -> int:
    """The 1-based number of cell ``index`` in the student's own notebook, without the grader's cells."""
    return 1 + sum(1 for cell in nb.cells[:index] if not is_grader_cell(cell))


HEADING = re.compile(r"^(#{1,6})\s+(.+?)\s*#*\s*$", re.MULTILINE)
MAX_SECTION_CHARS = 120


def cell_section(nb: nbformat.NotebookNode, index: int) -> str:
    """The headings above cell ``index`` as the notebook's table of contents shows them: the last section
    (``## 8. Fine-tuning``) and the sub-section after it (``### Training curves``), if any."""
    found: dict[int, str] = {}
    for cell in reversed(nb.cells[:index]):
        if cell.get("cell_type") != "markdown":
            continue
        for hashes, title in reversed(HEADING.findall(cell.get("source", ""))):
            level = len(hashes)
            if level not in found and all(level < deeper for deeper in found):
                found[level] = clip(title.replace("`", "").strip(), MAX_SECTION_CHARS)
        if any(level <= 2 for level in found):
            break
    return " > ".join(found[level] for level in sorted(found) if level >= 2 or len(found) == 1)


# A traceback frame in an installed library (transformers, pandas, ...): the student's fix is not there.
LIBRARY_FRAME = re.compile(r"^File [^\n]*(?:site-packages|dist-packages|/lib/python\d[.\d]*/)", re.IGNORECASE)


def student_traceback(frames: list[str]) -> str:
    """The traceback with each run of library frames folded into one line: the notebook's own frames
    (``Cell In[22], line 5``), the header and the error itself stay."""
    kept, hidden = [], 0
    for frame in map(strip_ansi, frames):
        if LIBRARY_FRAME.match(frame.lstrip()):
            hidden += 1
            continue
        if hidden:
            kept.append(f"[{hidden} frame(s) in installed libraries hidden]")
            hidden = 0
        kept.append(frame)
    if hidden:
        kept.append(f"[{hidden} frame(s) in installed libraries hidden]")
    return "\n".join(kept)


def cell_error(nb, index: int, output, number: int | None = None) -> CellError:
    """The error ``output`` of cell ``index``, as the student finds it. ``number``: the cell's number when the
    caller counted it (``student_cell_number`` is linear)."""
    cell = nb.cells[index]
    output = capped_error(output)
    count = cell.get("execution_count")
    return CellError(student_cell_number(nb, index) if number is None else number, cell.get("id", ""), cell.source,
                     output["ename"], strip_ansi(output["evalue"]), student_traceback(output["traceback"]),
                     section=cell_section(nb, index), execution_count=count if isinstance(count, int) else None)


@dataclass
class Execution:
    notebook: nbformat.NotebookNode
    duration_s: float
    timed_out: bool = False
    kernel_died: bool = False
    output_truncated: bool = False
    limit_exceeded: str = ""             # e.g. "used more than 12.0 GB of memory"; the kernel was stopped
    sandboxed: bool = False
    last_cell_index: int | None = None   # the cell running when execution ended
    errors: list[CellError] = field(default_factory=list)

    @property
    def last_cell(self) -> str:
        """The running cell as a student finds it: its section and its id."""
        if self.last_cell_index is None:
            return "an unknown cell"
        index = self.last_cell_index
        return cell_location(cell_section(self.notebook, index), self.notebook.cells[index].get("id", ""),
                             student_cell_number(self.notebook, index))

    @property
    def completed(self) -> bool:
        """The kernel ran every cell, without a timeout or a crash (cells may still have failed)."""
        return not (self.timed_out or self.kernel_died)


class GraderKernelManager(AsyncKernelManager):
    """A kernel manager that names the kernel's process the moment it exists (``on_launch``), so that the
    watchdog holds it before anything else of the start can fail; with a ``command_prefix``, the kernel
    command starts inside the sandbox."""

    command_prefix: list[str] = []
    on_launch: Callable[[int], object] | None = None

    def format_kernel_cmd(self, extra_arguments=None):
        return [*self.command_prefix, *super().format_kernel_cmd(extra_arguments)]

    async def _async_launch_kernel(self, kernel_cmd, **kw):
        # jupyter_client's documented override point. What follows the launch (the connection file, the
        # control socket, the client's channels) can fail, out of file descriptors for one.
        try:
            await super()._async_launch_kernel(kernel_cmd, **kw)
        finally:
            process = kernel_process(self)
            if process is not None and self.on_launch is not None:
                self.on_launch(process.pid)


def kernel_process(km: AsyncKernelManager):
    """The kernel's process as its manager started it (a ``Popen``: bubblewrap's, when confined), or None."""
    return getattr(km.provisioner, "process", None) if km.provisioner is not None else None


class CappedOutputClient(NotebookClient):
    """NotebookClient that stops a notebook once its output passes ``max_output_bytes``.

    A cell printing gigabytes would otherwise fill the grader's memory and the executed notebook.
    """

    def __init__(self, nb, max_output_bytes: int, watchdog: Watchdog, **kwargs):
        super().__init__(nb, **kwargs)
        self.max_output_bytes = max_output_bytes
        self.watchdog = watchdog
        self.output_bytes = 0
        self.output_truncated = False

    def output(self, outs, msg, display_id, cell_index):
        if msg["msg_type"] == "error":
            msg["content"] = capped_error(msg["content"])
        if msg["msg_type"] in ("stream", "display_data", "execute_result", "update_display_data", "error"):
            self.output_bytes += len(json.dumps(msg["content"]))
            if self.output_bytes > self.max_output_bytes:
                if not self.output_truncated:
                    self.output_truncated = True
                    outs.append(nbformat.v4.new_output(
                        "stream", name="stderr",
                        text=f"[grader] output truncated: over {self.max_output_bytes:,} bytes\n"))
                    self.watchdog.stop_kernel(f"printed more than {size_text(self.max_output_bytes)} of output")
                return None
        return super().output(outs, msg, display_id, cell_index)


def assigned_gpus(env: dict | None) -> list[str] | None:
    visible = (env or {}).get("CUDA_VISIBLE_DEVICES")
    return None if visible is None else [gpu.strip() for gpu in visible.split(",") if gpu.strip()]


def kernel_manager(kernel_name: str, confinement: Confinement | None, limits: Limits) -> GraderKernelManager:
    """A kernel in the sandbox (talking over Unix sockets: it has no network), or a plain one."""
    if confinement is None:
        return GraderKernelManager(kernel_name=kernel_name)
    km = GraderKernelManager(kernel_name=kernel_name, transport="ipc", ip=str(confinement.kernel_dir / "ipc"),
                               connection_file=str(confinement.kernel_dir / "kernel.json"))
    km.command_prefix = confinement.bwrap_command(limits)
    return km


def execute_notebook(nb: nbformat.NotebookNode, workdir: Path, *, time_limit_s: float,
                     max_output_bytes: int = 20_000_000, kernel_name: str = "python3",
                     env: dict | None = None, limits: Limits = Limits(),
                     sandbox: SandboxPlan | None = None, cancellation: Cancellation | None = None) -> Execution:
    """Run ``nb`` (changed in place) in ``workdir`` within ``time_limit_s`` seconds in all.

    With a ``sandbox`` plan that has bubblewrap's flags (``sandbox.plan_sandbox``), the kernel
    runs confined; without one, unconfined (the limits apply either way).
    """
    deadline = time.monotonic() + time_limit_s
    workdir = Path(os.path.realpath(workdir))   # the kernel, the sandbox and the watchdog need one absolute path
    # A short path: Unix socket paths are limited to about 100 characters.
    kernel_dir = Path(tempfile.mkdtemp(prefix="grade-kernel-"))
    confinement = (Confinement(workdir, kernel_dir, sandbox, gpus=assigned_gpus(env))
                   if sandbox is not None and sandbox.flags is not None else None)
    watchdog = Watchdog(limits, workdir)
    cancellation = cancellation or Cancellation()
    km = kernel_manager(kernel_name, confinement, limits)

    def start_watching(pid: int) -> None:
        watchdog.watch(pid)
        if cancellation.cancelled:  # cancelled while the kernel started, when there was nothing to stop yet
            watchdog.stop_kernel("")

    km.on_launch = start_watching
    client = CappedOutputClient(
        nb, max_output_bytes=max_output_bytes, watchdog=watchdog, allow_errors=True, km=km,
        # Each cell may use what is left of the notebook's time; past that the kernel is shut down.
        timeout_func=lambda cell: max(1, int(deadline - time.monotonic())),
        # A failed start is cleaned up by nbclient too: at once, not after a polite 5 s wait.
        shutdown_kernel="immediate",
        resources={"metadata": {"path": str(workdir)}}, record_timing=False)
    execution = Execution(notebook=nb, duration_s=0.0, sandboxed=confinement is not None)
    client.on_cell_start = lambda cell, cell_index: setattr(execution, "last_cell_index", cell_index)
    started = time.monotonic()
    # An event loop of this notebook's own, closed at the end: nbclient would otherwise keep one per thread.
    loop = asyncio.new_event_loop()
    try:
        with cancellation.register(lambda: watchdog.stop_kernel("")):
            loop.run_until_complete(
                client.async_execute(env=kernel_environment(env, sandboxed=confinement is not None)))
    except CellTimeoutError:
        execution.timed_out = True
    except DeadKernelError:
        execution.kernel_died = True
    finally:
        # nbclient leaves an atexit clean-up behind that fails loudly when the kernel never started.
        atexit.unregister(client._cleanup_kernel)
        watchdog.finish()
        loop.run_until_complete(release_kernel(client, km))
        close_loop(loop)
        shutil.rmtree(kernel_dir, ignore_errors=True)
        execution.duration_s = time.monotonic() - started
        execution.output_truncated = client.output_truncated
        execution.limit_exceeded = watchdog.exceeded
    execution.errors = cell_errors(nb)
    return execution


KERNEL_CHANNELS = ("shell", "iopub", "stdin", "control", "hb")


async def release_kernel(client: NotebookClient, km: GraderKernelManager) -> None:
    """Release all that a kernel's start made, even a start that failed part-way, once the kernel is killed.

    nbclient does this only for a kernel manager of its own making, and the grader makes its own: left
    alone, each student would keep ~19 file descriptors (the client's sockets, ZeroMQ's context), two
    threads (the heartbeat's, ZeroMQ's) and a zombie (the kernel's process, never waited on). Each step
    is tried on its own, so that one failing (out of file descriptors) does not keep the others.
    """
    kc = client.kc
    for name in KERNEL_CHANNELS if kc is not None else ():
        channel = getattr(kc, f"_{name}_channel", None)   # the property would create a channel that never was
        if channel is not None:
            _quietly(channel.stop if channel.is_alive() else channel.close)
    # The client has a ZeroMQ context of its own (not the manager's): left to the garbage collector, its
    # sockets and two threads outlived the student until a full collection, ever rarer as a class goes on.
    if kc is not None and getattr(kc, "_created_context", False) and not kc.context.closed:
        _quietly(lambda: kc.context.destroy(linger=0))
    process = kernel_process(km)
    if process is not None:
        _quietly(process.kill)   # the watchdog's kill, again, in case it could not see the process
        _quietly(lambda: process.wait(timeout=30))
        for pipe in (process.stdin, process.stdout, process.stderr):
            if pipe is not None:
                _quietly(pipe.close)
        if process.returncode is not None:
            km.provisioner.process = None
    try:
        await km.cleanup_resources()   # the control socket, the connection file, the ZeroMQ context
    except Exception:
        pass
    if km._created_context and not km.context.closed:   # left by a clean-up that failed part-way
        _quietly(lambda: km.context.destroy(linger=0))


def close_loop(loop: asyncio.AbstractEventLoop) -> None:
    """Close the notebook's event loop, with whatever an interrupted execution left pending on it."""
    pending = asyncio.all_tasks(loop)
    for task in pending:
        task.cancel()
    if pending:
        loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
    loop.run_until_complete(loop.shutdown_asyncgens())
    loop.close()


def _quietly(step: Callable[[], object]) -> None:
    try:
        step()
    except Exception:   # already closed, already reaped: nothing left to release
        pass


def iter_cell_errors(nb: nbformat.NotebookNode):
    """Each error output of the notebook as a CellError, in order, made only when asked for: one pass over
    the cells, whatever their number (a notebook of thousands of failing cells stays linear)."""
    before = 0   # the student's cells before this one
    for index, cell in enumerate(nb.cells):
        if cell.cell_type == "code":
            for output in cell.get("outputs", []):
                if output.get("output_type") == "error":
                    yield cell_error(nb, index, output, before + 1)
        before += not is_grader_cell(cell)


def cell_errors(nb: nbformat.NotebookNode) -> list[CellError]:
    """The notebook's first MAX_ERRORS_KEPT errors."""
    return list(itertools.islice(iter_cell_errors(nb), MAX_ERRORS_KEPT))
