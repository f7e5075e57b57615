"""Where a stage's items run: in this process, a process or thread pool, Dask, Prefect.

The choice is made by params, not by the stage (:func:`fanout`):
``orchestration.task_runner`` is ``process`` (spawned processes, the default), ``thread``
(for I/O-bound work) or ``dask`` (a Dask cluster at ``orchestration.dask_address``, or a
LocalCluster of ``common.workers`` processes). With ``orchestration.prefect_tasks`` every
item is also a Prefect task run, submitted through Prefect's task runner of the same kind
(``ThreadPoolTaskRunner``, ``ProcessPoolTaskRunner``, prefect-dask's ``DaskTaskRunner``).
That needs a Prefect server, and is off by default: without one Prefect starts a temporary
server per process (seconds per stage; see docs/orchestration.md, "Scaling out"), so a plain
``dvc repro`` uses the plain pool of the same kind. Every choice runs the same
``work(item)`` and gives the same outcome; threads and Prefect's process pool do not
survive a dying worker, a :class:`RespawningPool` and Dask do (the dead worker costs its
own item only).

Every executor is a ``concurrent.futures.Executor``, handed to
:func:`~components.orchestration.runner.run_items`, or used directly: the shards stage
maps its clips in order with :func:`ordered_map`, the synthetic corpus renders its
clips on a :func:`default_executor`.
"""

from __future__ import annotations

import concurrent.futures as cf
import logging
import multiprocessing as mp
import os
import sys
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from components.errors import ConfigError
from components.orchestration.items import Item, call_item

if TYPE_CHECKING:
    from components.config import Params

log = logging.getLogger(__name__)


PARENT_POLL_SECONDS = 0.5


def _init_worker(parent: int, warmup: Callable[[], Any] | None = None, forked: bool = False) -> None:
    """Worker initializer: one BLAS/OpenMP thread per process (workers are the parallelism),
    the worker dies with the stage process that spawned it, and the stage's ``warmup``
    (load a model, say) runs once, before the worker's first item.

    A pool worker waits on a queue whose other end every worker holds too, so a stage
    killed outright (SIGKILL, the OOM killer) would leave its workers waiting forever, and
    with them the multiprocessing resource tracker (it ends when the last process sharing
    it does). A daemon thread here watches the parent (``parent``, the pid of the process
    that made the pool: a worker still starting up when it was killed has been adopted by
    another process already) and ends the worker as soon as it is gone. (The parent-death
    signal would not do: Linux ties it to the parent *thread*, and a respawned pool is
    started from whichever thread saw the old one break.)
    """
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = "1"
    # A forked worker inherits libraries the stage process loaded, their thread pools sized
    # for every core before the variables above were set (OpenBLAS and OpenMP read them at
    # load): size them here. Measured on the audio stage: 2 forked workers each running 2
    # OpenBLAS threads used 1.6x the CPU of one thread for the same clips.
    # (OpenCV's pool is sized in the parent around the fork instead, _opencv_serial: resizing
    # a pool inherited from a parent that had used it waits forever on its missing threads.)
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(1)
    if "cv2" in sys.modules and not forked:
        sys.modules["cv2"].setNumThreads(1)
    from threadpoolctl import threadpool_limits

    threadpool_limits(1)
    threading.Thread(target=_exit_with_parent, args=(parent,), name="exit-with-parent", daemon=True).start()
    if warmup is not None:
        warmup()


def _exit_with_parent(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(PARENT_POLL_SECONDS)
    os._exit(1)  # no cleanup: the parent that would collect our results is gone


START_METHODS = ("fork", "forkserver", "spawn")


def default_executor(workers: int, *, warmup: Callable[[], Any] | None = None,
                     start_method: str = "fork") -> cf.Executor | None:
    """``workers`` processes that survive the death of one (None: run in this process)."""
    if workers <= 1:
        return None
    return RespawningPool(workers, warmup=warmup, start_method=start_method)


def _process_pool(workers: int, warmup: Callable[[], Any] | None = None,
                  start_method: str = "spawn") -> cf.ProcessPoolExecutor:
    if start_method not in START_METHODS or start_method not in mp.get_all_start_methods():
        raise ConfigError(f"orchestration.start_method {start_method!r}: this platform has "
                          f"{mp.get_all_start_methods()}")
    if start_method == "fork" and threading.active_count() > 1:
        # A fork copies one thread and every lock the others held: a worker could wait on one
        # forever (seen in a test session whose earlier tests left Dask and Prefect threads
        # running). The idle native pools of OpenCV, ONNX Runtime and torch hold none; their
        # sizes are reset in the worker (_init_worker).
        log.debug("forking is unsafe with %d Python threads running: workers are spawned", threading.active_count())
        start_method = "spawn"
    return cf.ProcessPoolExecutor(workers, mp_context=mp.get_context(start_method), initializer=_init_worker,
                                  initargs=(os.getpid(), warmup, start_method == "fork"))


@contextmanager
def _opencv_serial() -> Iterator[None]:
    """OpenCV at one thread in this process while workers are forked from it, then as it was.

    A forked worker must not resize the OpenCV thread pool it inherits: if this process had
    used the pool, its threads are missing in the copy and ``cv2.setNumThreads`` there waits
    on them forever (seen: a test session whose earlier tests had run detection in process
    hung its next stage's workers in ``pthread_cond_destroy``). Sized to one thread here,
    before the fork, the copies start serial and never touch the pool.
    """
    cv2 = sys.modules.get("cv2")
    if cv2 is None:
        yield
        return
    threads = cv2.getNumThreads()
    cv2.setNumThreads(1)
    try:
        yield
    finally:
        cv2.setNumThreads(threads)


class RespawningPool(cf.Executor):
    """A spawn process pool in which a worker's death (a segfault, the OOM killer) costs one call.

    In a plain ``ProcessPoolExecutor`` a dead worker breaks the pool and every call still in
    it fails. Here at most ``workers`` calls are in the pool at a time (the rest wait here),
    so after a break the suspects are those few: each reruns alone in a process of its own,
    where only the culprit dies again (its future fails with ``BrokenProcessPool``), and the
    queue goes on in a fresh pool. Futures complete in any order, as in a plain pool.

    Worker start-up is paid once per stage: the workers start when the pool is made, each
    runs ``warmup`` once, and with ``start_method="fork"`` (the default on Linux) they are
    copies of the stage process, its imports done: a spawned worker pays ~0.8 s of imports
    before its first item, which on a short stage is most of the gain of a second core. They
    are forked here, before the stage starts any thread (a progress bar), and only when the
    process runs no other Python thread (a stage run inside a Prefect worker or a test
    session may), which is what makes forking safe; otherwise, and for the pools that
    replace a dead worker's (started later, from a callback thread), they are spawned.
    """

    def __init__(self, workers: int, *, warmup: Callable[[], Any] | None = None, start_method: str = "spawn"):
        self._workers, self._warmup = workers, warmup
        self._lock = threading.RLock()  # RLock: a done callback may run inside submit
        self._queue: deque[tuple[Callable[..., Any], tuple[Any, ...], dict[str, Any], cf.Future]] = deque()
        self._running: dict[cf.Future, tuple[Any, cf.ProcessPoolExecutor, bool]] = {}
        self._pool = _process_pool(workers, warmup, start_method)
        with _opencv_serial():
            self._pool.submit(_started).result()  # all workers start now (a fork pool starts them at its first call)
        self._closed = False

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> cf.Future:
        call = (fn, args, kwargs, cf.Future())
        with self._lock:
            if self._closed:
                raise RuntimeError("cannot schedule new futures after shutdown")
            self._queue.append(call)
            self._fill()
        return call[3]

    def _fill(self) -> None:
        while self._queue and len(self._running) < self._workers and not self._closed:
            call = self._queue.popleft()
            if call[3].set_running_or_notify_cancel():
                self._start(call, alone=False)

    def _start(self, call: tuple[Any, ...], *, alone: bool) -> None:
        fn, args, kwargs, _ = call
        pool = _process_pool(1, self._warmup) if alone else self._pool
        try:
            inner = pool.submit(fn, *args, **kwargs)
        except cf.BrokenExecutor:  # the shared pool, broken by a death whose callbacks have not run yet
            self._respawn(pool)
            pool = self._pool
            inner = pool.submit(fn, *args, **kwargs)
        self._running[inner] = (call, pool, alone)
        inner.add_done_callback(self._finished)

    def _respawn(self, broken: cf.ProcessPoolExecutor) -> None:
        if broken is self._pool:
            log.warning("a worker process died: a fresh pool goes on, and the calls the death took down "
                        "rerun one by one, each in a process of its own")
            broken.shutdown(wait=False, cancel_futures=True)
            self._pool = _process_pool(self._workers, self._warmup)

    def _finished(self, inner: cf.Future) -> None:
        with self._lock:
            call, pool, alone = self._running.pop(inner)
            outer = call[3]
            if inner.cancelled():
                outer.set_exception(cf.CancelledError())
            elif isinstance(inner.exception(), cf.BrokenExecutor) and not alone and not self._closed:
                self._respawn(pool)
                self._start(call, alone=True)
            elif inner.exception() is not None:
                outer.set_exception(inner.exception())
            else:
                outer.set_result(inner.result())
            if alone:
                pool.shutdown(wait=False)
            self._fill()

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        with self._lock:
            if cancel_futures:
                while self._queue:
                    self._queue.popleft()[3].cancel()
            pending = [call[3] for call in self._queue] + [call[3] for call, _, _ in self._running.values()]
        if wait:
            cf.wait(pending)
        with self._lock:
            self._closed = True
            pools = {self._pool} | {pool for _, pool, _ in self._running.values()}
        for pool in pools:
            pool.shutdown(wait=wait, cancel_futures=cancel_futures)


def _started() -> None:
    """A no-op: the first call of a pool, which makes it start its workers."""


@contextmanager
def fanout(params: Params, warmup: Callable[[], Any] | None = None) -> Iterator[cf.Executor | None]:
    """The executor a stage's per-item work runs on, as ``params.orchestration`` chooses.

    ``None`` means "in this process" (one local worker, no Prefect task runs): the cheapest
    way to run a small corpus. ``warmup`` runs once in each worker process of the process
    pool (:class:`RespawningPool`) before its first item. The executor is shut down (and a
    LocalCluster it started stopped) on exit; pass it to :func:`run_items` as ``executor``.
    """
    orch, workers = params.orchestration, params.common.workers
    if orch.task_runner == "dask":
        with _dask_client(orch.dask_address, workers) as client:
            _check_shared_storage(client, Path(params.common.data_dir))
            if orch.prefect_tasks:
                from prefect_dask import DaskTaskRunner

                # The runner's client to our cluster; prefect-dask closes it, not the cluster.
                with _prefect_executor(DaskTaskRunner(address=client.scheduler.address)) as pool:
                    yield pool
            else:
                yield client.get_executor(pure=False)  # items have side effects: never deduplicate
        return
    if orch.prefect_tasks:
        from prefect.task_runners import ProcessPoolTaskRunner, ThreadPoolTaskRunner

        runner = (ThreadPoolTaskRunner(max_workers=workers) if orch.task_runner == "thread"
                  else ProcessPoolTaskRunner(max_workers=workers, initializer=_init_worker,
                                             initargs=(os.getpid(),)))
        with _prefect_executor(runner) as pool:
            yield pool
        return
    if workers <= 1:
        yield None
        return
    pool = (cf.ThreadPoolExecutor(workers, thread_name_prefix="item") if orch.task_runner == "thread"
            else default_executor(workers, warmup=warmup, start_method=orch.start_method))
    try:
        yield pool
    finally:
        pool.shutdown(cancel_futures=True)


@contextmanager
def _dask_client(address: str | None, workers: int) -> Iterator[Any]:
    """A client of the cluster at ``address``, or of a LocalCluster of ``workers`` processes.

    LocalCluster workers are processes with one thread each (the GIL-bound decoding of one
    video per core, like the process pool); Dask's nannies give them one BLAS thread
    (``distributed.nanny.pre-spawn-environ``), on a remote cluster too.
    """
    from distributed import Client, LocalCluster

    if address:
        try:
            client = Client(address, timeout=10)
        except OSError as exc:
            raise ConfigError(f"orchestration.dask_address {address!r}: no Dask scheduler answers ({exc})") from None
        with client:
            log.info("items run on the Dask cluster at %s (%d workers)", address,
                     len(client.scheduler_info()["workers"]))
            yield client
        return
    with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=":0") as cluster:
        with Client(cluster) as client:
            log.info("items run on a Dask LocalCluster of %d processes (%s)", workers, cluster.scheduler_address)
            yield client


def _sees(probe: str, cwd: str) -> bool:
    """On a Dask worker: is ``probe`` there, and does the worker resolve relative paths as we do?"""
    return os.path.exists(probe) and os.path.isdir(cwd) and os.path.samefile(os.getcwd(), cwd)


def _check_shared_storage(client: Any, data_dir: Path) -> None:
    """Fail before any item if a Dask worker cannot see ``common.data_dir`` as this process does.

    Items carry paths, not bytes: a worker reads its inputs from and writes its outputs to
    the data folder itself, so the folder must be on storage every worker mounts at the
    same path, and the workers must start in the project folder (paths may be relative).
    A probe file written here and looked for there proves it, a mere same-named local
    folder on a worker does not pass.
    """
    data_dir.mkdir(parents=True, exist_ok=True)
    probe = data_dir.absolute() / f".dask-probe-{uuid.uuid4().hex}"
    probe.write_text("written by the stage process; read by the Dask workers\n")
    try:
        seen = client.run(_sees, str(probe), os.getcwd())
    finally:
        probe.unlink(missing_ok=True)
    if not seen:
        raise ConfigError("the Dask cluster has no workers (orchestration.dask_address)")
    blind = sorted(worker for worker, ok in seen.items() if not ok)
    if blind:
        raise ConfigError(
            f"Dask worker(s) {blind} do not see common.data_dir {str(data_dir)!r} at {data_dir.absolute()} "
            f"from the project folder {os.getcwd()}: put the project (or at least its data folder) on shared "
            "storage mounted at the same path on every worker, and start the workers in the project folder")


@contextmanager
def _prefect_executor(runner: Any) -> Iterator[cf.Executor]:
    """Enter a Prefect task runner and expose it as a ``concurrent.futures`` executor."""
    from prefect.settings import PREFECT_API_URL, PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW, temporary_settings

    if not PREFECT_API_URL.value():
        raise ConfigError(
            "orchestration.prefect_tasks needs a Prefect server (`earshot server up`, or PREFECT_API_URL): "
            "without one Prefect starts a temporary server in every worker process")
    # Item task runs belong to no flow run (the stage is a DVC command): their logs stay local.
    with temporary_settings(updates={PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW: "ignore"}), runner:
        yield _PrefectExecutor(runner)


def _task_name(fn: Callable[..., Any], args: tuple[Any, ...]) -> str:
    """``faces.process_clip``: the stage module and function an item runs (``call_item`` wraps it)."""
    if fn is call_item and args:
        fn = args[0]
    fn = getattr(fn, "func", fn)  # functools.partial
    module = getattr(fn, "__module__", "") or ""
    return f"{module.rsplit('.', 1)[-1]}.{getattr(fn, '__name__', 'item')}".lstrip(".")


def _task_run_name(parameters: dict[str, Any]) -> str:
    """The Prefect task run of an item is named after its key (shown in the UI)."""
    for value in parameters.values():
        if isinstance(value, Item):
            return value.key
        if isinstance(value, dict) and isinstance(value.get("key"), str):
            return value["key"]
    return "item"


class _PrefectExecutor(cf.Executor):
    """A Prefect task runner behind the ``concurrent.futures`` interface the stages use.

    Every call becomes a Prefect task run (no result caching or persistence: the runner's
    sidecars decide what reruns, and retries are the next run's business); its return
    value or exception comes back on a plain :class:`concurrent.futures.Future`.
    """

    def __init__(self, runner: Any):
        self._runner = runner
        self._tasks: dict[tuple[Callable[..., Any], str], Any] = {}

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> cf.Future:
        from prefect.utilities.callables import get_call_parameters

        name = _task_name(fn, args)
        task = self._tasks.get((fn, name))
        if task is None:
            from prefect import task as make_task
            from prefect.cache_policies import NO_CACHE

            task = self._tasks[fn, name] = make_task(fn, name=name, task_run_name=_task_run_name,
                                                     cache_policy=NO_CACHE, persist_result=False, retries=0)
        future: cf.Future = cf.Future()
        future.set_running_or_notify_cancel()
        self._runner.submit(task, get_call_parameters(fn, args, kwargs)).add_done_callback(
            lambda done: _settle(future, done))
        return future

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """The task runner is shut down by :func:`fanout`, which entered it."""


def _settle(future: cf.Future, done: Any) -> None:
    try:
        future.set_result(done.result())
    except Exception as exc:  # noqa: BLE001 - the task run failed (e.g. its worker died): the caller decides
        future.set_exception(exc)


def ordered_map(fn: Callable[[Any], Any], items: Iterable[Any], pool: cf.Executor | None,
                 ahead: int) -> Iterator[Any]:
    """``map(fn, items)`` in order, at most ``ahead`` results in flight (bounded memory)."""
    if pool is None:
        yield from map(fn, items)
        return
    pending: deque[cf.Future] = deque()
    for item in items:
        pending.append(pool.submit(fn, item))
        if len(pending) >= ahead:
            yield pending.popleft().result()
    while pending:
        yield pending.popleft().result()
