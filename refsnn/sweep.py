"""A small sweep layer: apply one function to a list of independent points, resumably.

    run_sweep(fn, points, out_dir, *, name=None, workers=None, scheduler=None, progress=True)
        -> [fn(point) for point in points]          (in the order of ``points``)

A *point* is a JSON-able description of one unit of work (a dict of plain values: numbers,
strings, lists, dicts) that says everything its result depends on, including the seed; ``fn``
is a module-level function (so that it pickles) returning a JSON-able dict. Each result is
written to ``out_dir/<name(point)>.json`` as ``{"point": ..., "result": ...}`` via a temporary
file and a rename, so an interrupted sweep leaves only whole files behind. Running the same
sweep again reuses every file whose stored point equals the requested one and computes the rest;
a file holding a different point (another seed, another configuration) is recomputed and
overwritten. JSON floats round-trip exactly, so a resumed sweep returns the same numbers as a
fresh one.

Where the work runs:
- ``workers == 1``: in this process, one point after the other;
- ``workers > 1`` (default ``os.cpu_count()``): a pool of local processes ("spawn" start method,
  the same on every platform), at most MAX_WORKERS_PER_CPU per CPU (``max_workers()``): the
  points are CPU-bound, so more processes only compete for the cores, and each one costs the
  memory of a Python process with numpy loaded;
- ``scheduler="tcp://host:8786"``: a Dask distributed cluster (the optional extra ``dask``,
  imported only here and only then). Workers need refsnn installed; results come back to this
  process, which alone writes the files, so the cluster needs no shared file system.

Results never depend on where a point ran: a point's randomness must come from the point itself
(e.g. ``numpy.random.SeedSequence(seed, spawn_key=(repeat,))``), never from worker state.
This module knows nothing about spiking networks, and imports neither matplotlib nor scipy.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import re
import signal
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Callable, Sequence, TextIO

from .errors import RefsnnError
from .progress import Progress

PROGRESS_DELAY = 2.0      # seconds before the progress bar first appears (short runs stay quiet)
MAX_WORKERS_PER_CPU = 4   # local worker processes allowed per CPU (module doc)


def max_workers() -> int:
    """The most local worker processes a sweep starts: MAX_WORKERS_PER_CPU per CPU."""
    return MAX_WORKERS_PER_CPU * (os.cpu_count() or 1)


def check_workers(workers: Any, local: bool = True) -> int:
    """workers as an int in 1..max_workers() (any int >= 1 when not ``local``), else RefsnnError."""
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise RefsnnError(f"workers must be an integer >= 1, got {workers!r}")
    if local and workers > max_workers():
        raise RefsnnError(f"workers must be at most {max_workers()} ({MAX_WORKERS_PER_CPU} per CPU; use a Dask "
                          f"scheduler for more), got {workers}")
    return workers


# ----------------------------------------------------------------------------- point files

def canonical_json(value: Any) -> str:
    """The one text of a JSON-able value used to compare points (sorted keys, no spaces)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=False)


def default_name(point: Any) -> str:
    """A file name for a point: the first 16 hex digits of the SHA-256 of its canonical JSON."""
    return hashlib.sha256(canonical_json(point).encode()).hexdigest()[:16]


def _check_name(name: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9._=+-]+", name) or name.startswith("."):
        raise ValueError(f"point file name {name!r} must use letters, digits and . _ = + - only")
    return name


def write_json_atomic(path: Path, value: Any) -> None:
    """Write ``value`` as JSON to ``path`` via a temporary file in the same folder and a rename."""
    handle = tempfile.NamedTemporaryFile("w", dir=path.parent, prefix=f".{path.name}.", suffix=".tmp",
                                         delete=False, encoding="utf-8")
    try:
        with handle:
            json.dump(value, handle, allow_nan=False)
        os.replace(handle.name, path)
    except BaseException:
        Path(handle.name).unlink(missing_ok=True)
        raise


def load_finished(path: Path, point: Any) -> dict | None:
    """The stored result of ``point`` in ``path``, or None if absent, unreadable or for another point."""
    try:
        stored = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(stored, dict) or "result" not in stored:
        return None
    if canonical_json(stored.get("point")) != canonical_json(point):
        return None
    return stored["result"]


# ----------------------------------------------------------------------------- runners

def _worker_init(parent_pid: int) -> None:
    """Pool worker initialiser: leave Ctrl-C to the parent, and exit if the parent dies.

    The parent handles Ctrl-C (and SIGTERM) by terminating the pool; a parent killed outright
    (SIGKILL) cannot, so each worker watches for being orphaned and exits within a second.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)

    def exit_when_orphaned() -> None:
        while os.getppid() == parent_pid:
            time.sleep(1.0)
        os._exit(1)

    threading.Thread(target=exit_when_orphaned, daemon=True).start()


def _call(task: tuple[Callable, int, Any]) -> tuple[int, Any]:
    fn, index, point = task
    return index, fn(point)


class _Terminated(KeyboardInterrupt):
    """SIGTERM, turned into an interruption so that the pool is torn down like on Ctrl-C."""


def _raise_terminated(signum, frame):
    raise _Terminated()


def _run_local(fn: Callable, todo: list[tuple[int, Any]], workers: int, on_result: Callable) -> None:
    if workers == 1 or len(todo) == 1:
        for index, point in todo:
            on_result(index, fn(point))
        return
    in_main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _raise_terminated) if in_main_thread else None
    pool = multiprocessing.get_context("spawn").Pool(min(workers, len(todo)), initializer=_worker_init,
                                                     initargs=(os.getpid(),))
    try:
        for index, result in pool.imap_unordered(_call, [(fn, index, point) for index, point in todo]):
            on_result(index, result)
        pool.close()
    except BaseException:
        pool.terminate()                 # running points are lost; finished ones are on disk
        raise
    finally:
        pool.join()
        if in_main_thread:
            signal.signal(signal.SIGTERM, previous)


def _run_dask(fn: Callable, todo: list[tuple[int, Any]], scheduler: str, on_result: Callable) -> None:
    try:
        from dask.distributed import Client, as_completed
    except ImportError:
        raise RefsnnError("--scheduler needs dask.distributed, which is not installed: "
                          "pip install 'refsnn[dask]'") from None
    from distributed.comm.addressing import get_address_host_port, parse_address

    try:                                 # a malformed address would leave a half-built Client behind
        if parse_address(scheduler)[0] in ("tcp", "tls", "ws", "wss"):
            get_address_host_port(scheduler)
    except ValueError as exc:
        raise RefsnnError(f"--scheduler: {scheduler!r} is not a scheduler address such as "
                          f"tcp://host:8786: {exc}") from None
    try:
        client = Client(scheduler, timeout=20, set_as_default=False)
    except (OSError, TimeoutError, ValueError) as exc:
        raise RefsnnError(f"--scheduler: cannot connect to the Dask scheduler at {scheduler!r}: {exc}") from None
    futures: dict = {}
    try:
        futures = {client.submit(fn, point, pure=False): index for index, point in todo}
        for future in as_completed(list(futures), loop=client.loop):
            on_result(futures[future], future.result())
    except BaseException:
        client.cancel(list(futures))
        raise
    finally:
        client.close()


def run_sweep(fn: Callable[[Any], dict], points: Sequence[Any], out_dir: str | os.PathLike, *,
              name: Callable[[Any], str] | None = None, workers: int | None = None,
              scheduler: str | None = None, progress: bool = True, label: str = "sweep",
              stream: TextIO | None = None) -> list[dict]:
    """Return ``[fn(p) for p in points]``, reusing and writing ``out_dir/<name(p)>.json`` (module doc).

    ``workers`` counts local processes (default ``os.cpu_count()``); it is ignored when
    ``scheduler`` (a Dask scheduler address) is given.
    """
    workers = check_workers(os.cpu_count() or 1 if workers is None else workers, local=scheduler is None)
    name = name or default_name
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise RefsnnError(f"cannot create the folder {str(out)!r}: {exc.strerror or exc}") from None
    names = [_check_name(name(point)) for point in points]
    if len(set(names)) != len(names):
        raise ValueError("two points of the sweep have the same file name; make name(point) unique")

    results: list[dict | None] = [None] * len(points)
    todo = []
    for index, point in enumerate(points):
        stored = load_finished(out / f"{names[index]}.json", point)
        if stored is None:
            todo.append((index, point))
        else:
            results[index] = stored

    bar = Progress(len(points), done=len(points) - len(todo), label=label, unit="points", stream=stream,
                   delay=PROGRESS_DELAY, enabled=progress)

    def on_result(index: int, result: dict) -> None:
        record = {"point": points[index], "result": result}
        write_json_atomic(out / f"{names[index]}.json", record)
        results[index] = json.loads(canonical_json(record))["result"]   # as a resumed run reads it
        bar.update()

    try:
        if todo and scheduler is not None:
            _run_dask(fn, todo, scheduler, on_result)
        elif todo:
            _run_local(fn, todo, workers, on_result)
    finally:
        bar.close()
    assert all(result is not None for result in results)
    return results  # type: ignore[return-value]
