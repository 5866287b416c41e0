"""The language worker: one thread that runs every language-model request, in order.

The MLLM takes from tens of milliseconds (a tiny model) to seconds (Sa2VA-1B on a small GPU)
per request, while tracking must go on at camera rate. So no ROS callback ever runs the
model: commands, services and chat goals become :class:`Job` s in a BOUNDED queue served by
this thread, and a request that finds the queue full is rejected at once with a message
saying so (a robot that piles up questions faster than they are answered must learn it
now, not minutes later). Re-grounding lost objects is background work in a second, equally
bounded lane that only runs when no request waits.

Callers never wait by polling: a job calls its done callbacks when it finishes, fails,
is cancelled while queued, or runs past its deadline (a small watcher thread enforces
``timeout``, so a service answers in time even while the model is still busy).
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)


class QueueFullError(RuntimeError):
    """The worker already holds as many waiting requests as it may."""


class WorkerStoppedError(RuntimeError):
    """The worker stopped (node deactivated) before the job ran."""


class CancelledError(RuntimeError):
    """The job was cancelled before it started."""


class DeadlineError(RuntimeError):
    """The job was not done within its timeout; the caller got this, the model was asked to stop."""


class Job:
    """One request for the worker.

    ``fn(job)`` runs on the worker thread; long functions poll :attr:`cancel_requested`
    (e.g. from a generation callback) to stop early. The job ends once: by its function's
    return or exception, or earlier by a deadline or a cancel while queued; whatever ends it
    first is its outcome, and its done callbacks run then, on the thread that ended it.
    """

    def __init__(
        self, fn: Callable[[Job], Any], kind: str, background: bool = False, timeout: float | None = None
    ) -> None:
        self.fn = fn
        self.kind = kind
        self.background = background
        self.submitted = time.monotonic()
        self.timeout = timeout
        self.deadline = self.submitted + timeout if timeout else None
        self.started: float | None = None
        self.finished: float | None = None
        self._lock = threading.Lock()
        self._done = threading.Event()
        self._callbacks: list[Callable[[Job], None]] = []
        self._result: Any = None
        self._error: BaseException | None = None
        self._cancel = threading.Event()

    # -- caller side ------------------------------------------------------------------------

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the job ended; False on timeout (for callers that may block a thread)."""
        return self._done.wait(timeout)

    def done(self) -> bool:
        return self._done.is_set()

    def add_done_callback(self, callback: Callable[[Job], None]) -> None:
        """Call ``callback(job)`` when the job ends (at once if it already has)."""
        with self._lock:
            if not self._done.is_set():
                self._callbacks.append(callback)
                return
        callback(self)

    def result(self) -> Any:
        """The function's return value; re-raises its exception. Call once the job is done."""
        if not self._done.is_set():
            raise RuntimeError(f"{self.kind} job has not finished")
        if self._error is not None:
            raise self._error
        return self._result

    def cancel(self) -> None:
        """Ask the job to stop: skipped if it has not started, else ``cancel_requested`` is set."""
        self._cancel.set()

    @property
    def cancel_requested(self) -> bool:
        return self._cancel.is_set()

    # -- worker side ------------------------------------------------------------------------

    def _run(self) -> None:
        self.started = time.monotonic()
        try:
            if self._cancel.is_set():
                raise CancelledError(f"{self.kind} request was cancelled before it started")
            result = self.fn(self)
        except BaseException as exc:  # noqa: BLE001 - handed to the caller, never kills the worker
            self._end(None, exc)
        else:
            self._end(result, None)

    def _end(self, result: Any, error: BaseException | None) -> bool:
        """Record the outcome unless the job already ended; run the done callbacks."""
        with self._lock:
            if self._done.is_set():
                return False
            self._result, self._error = result, error
            self.finished = time.monotonic()
            self._done.set()
            callbacks, self._callbacks = self._callbacks, []
        for callback in callbacks:
            try:
                callback(self)
            except Exception:  # noqa: BLE001 - a caller's callback must never stop the worker
                log.exception("done callback of a %s job failed", self.kind)
        return True

    def _fail(self, error: BaseException) -> bool:
        return self._end(None, error)


class LanguageWorker:
    """A single worker thread with a bounded request lane and a bounded background lane."""

    def __init__(
        self,
        max_queue: int,
        thread_setup: Callable[[], None] | None = None,
        name: str = "sa2va-language",
        on_idle: Callable[[], None] | None = None,
    ) -> None:
        if max_queue < 1:
            raise ValueError("max_queue must be >= 1")
        self.max_queue = max_queue
        self._setup = thread_setup
        #: Called on the worker thread each time the last waiting job is done (memory trimming).
        self._on_idle = on_idle
        self._name = name
        self._cond = threading.Condition()
        self._requests: collections.deque[Job] = collections.deque()
        self._background: collections.deque[Job] = collections.deque()
        self._running = False
        self._current: Job | None = None
        self._thread: threading.Thread | None = None
        self._watcher: threading.Thread | None = None
        self.completed = 0
        self.rejected = 0
        self.expired = 0
        self._busy_time = 0.0

    # -- lifecycle --------------------------------------------------------------------------

    def start(self) -> None:
        with self._cond:
            if self._running:
                return
            self._running = True
        self._thread = threading.Thread(target=self._loop, name=self._name, daemon=True)
        self._thread.start()
        self._watcher = threading.Thread(
            target=self._watch_deadlines, name=f"{self._name}-deadlines", daemon=True
        )
        self._watcher.start()

    def stop(self, reason: str = "the node is shutting down", timeout: float = 30.0) -> None:
        """Fail every waiting job with ``reason``, ask the running one to stop, join the threads."""
        with self._cond:
            self._running = False
            pending = list(self._requests) + list(self._background)
            self._requests.clear()
            self._background.clear()
            if self._current is not None:
                self._current.cancel()
            self._cond.notify_all()
        for job in pending:
            job._fail(WorkerStoppedError(f"{job.kind} request dropped: {reason}"))
        # Locals: deactivate (an executor thread) and shutdown (the main thread) may both stop it.
        for thread in (self._watcher, self._thread):
            if thread is not None and thread is not threading.current_thread():
                thread.join(timeout)
                if thread.is_alive():
                    log.warning("%s still busy %.0f s after stop was asked", thread.name, timeout)
        self._thread = self._watcher = None

    @property
    def running(self) -> bool:
        return self._running

    # -- submitting -------------------------------------------------------------------------

    def submit(
        self, fn: Callable[[Job], Any], kind: str, background: bool = False, timeout: float | None = None
    ) -> Job:
        """Queue ``fn``; raise QueueFullError (with the reason) when its lane is full.

        With ``timeout`` (seconds from now) the job ends with a :class:`DeadlineError` when it is
        not done by then: removed from the queue if it has not started, else asked to stop.
        """
        job = Job(fn, kind, background, timeout)
        with self._cond:
            if not self._running:
                raise WorkerStoppedError(f"{kind} request refused: the node is not active")
            lane = self._background if background else self._requests
            if len(lane) >= self.max_queue:
                self.rejected += 1
                raise QueueFullError(
                    f"{kind} request rejected: the language worker is busy with "
                    f"{len(lane)} request(s) already waiting (language_queue_size={self.max_queue}); "
                    "try again later"
                )
            lane.append(job)
            self._cond.notify_all()  # the worker, and the deadline watcher when the job has one
        return job

    def cancel(self, job: Job) -> None:
        """Stop ``job``: a queued one ends now (CancelledError), a running one is asked to stop."""
        job.cancel()
        with self._cond:
            queued = self._unqueue(job)
        if queued:
            job._fail(CancelledError(f"{job.kind} request was cancelled before it started"))

    def _unqueue(self, job: Job) -> bool:
        lane = self._background if job.background else self._requests
        try:
            lane.remove(job)
        except ValueError:
            return False
        return True

    # -- state for diagnostics --------------------------------------------------------------

    @property
    def depth(self) -> int:
        with self._cond:
            return len(self._requests)

    @property
    def background_depth(self) -> int:
        with self._cond:
            return len(self._background)

    @property
    def busy(self) -> bool:
        return self._current is not None

    def busy_seconds(self) -> float:
        """Seconds spent running jobs so far (the running one included)."""
        current = self._current
        running = time.monotonic() - current.started if current is not None and current.started else 0.0
        return self._busy_time + running

    # -- the threads ------------------------------------------------------------------------

    def _loop(self) -> None:
        if self._setup is not None:
            try:
                self._setup()
            except Exception:  # noqa: BLE001 - a failed tweak (priority, threads) is not fatal
                log.exception("language worker thread set-up failed; continuing with defaults")
        while True:
            with self._cond:
                while self._running and not self._requests and not self._background:
                    self._cond.wait()
                if not self._running:
                    return
                job = self._requests.popleft() if self._requests else self._background.popleft()
                self._current = job
            job._run()
            ran = time.monotonic() - (job.started or time.monotonic())
            del job  # its closure holds the request's frame and answer: not until the next job
            with self._cond:
                self._current = None
                self.completed += 1
                self._busy_time += ran
                idle = not self._requests and not self._background
            if idle and self._on_idle is not None:
                try:
                    self._on_idle()
                except Exception:  # noqa: BLE001 - housekeeping must never stop the worker
                    log.exception("language worker idle hook failed")

    def _watch_deadlines(self) -> None:
        """End jobs that outlive their timeout; sleeps until the nearest deadline (never polls)."""
        while True:
            with self._cond:
                if not self._running:
                    return
                now = time.monotonic()
                jobs = [j for j in (*self._requests, *self._background, self._current) if j is not None]
                timed = [j for j in jobs if j.deadline is not None and not j.done()]
                expired = [j for j in timed if j.deadline <= now]
                for job in expired:
                    self._unqueue(job)
                    job.cancel()
                    self.expired += 1
                if not expired:
                    nearest = min((j.deadline for j in timed), default=None)
                    self._cond.wait(None if nearest is None else nearest - now)
                    continue
            for job in expired:
                job._fail(
                    DeadlineError(
                        f"{job.kind} timed out after {job.timeout:g} s waiting for the language model "
                        "(request_timeout)"
                    )
                )
