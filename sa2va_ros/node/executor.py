"""The node's executor: rclpy's MultiThreadedExecutor without its busy loop under load.

Why not the stock one (Humble 3.3, Jazzy 7.1, Kilted 9.1): its spinning thread hands a ready
callback to the thread pool and goes back to waiting for new work at once. Until a pool thread has
taken the message, that wait returns immediately with nothing ready, so the spinning thread loops,
holding the interpreter lock that the pool thread needs to take the message; each loop also hands
the same still-waiting task to the pool again (rclpy#1452; upstream's rclpy 10.0.4 changed this in
#1547). Measured with a bare rclpy relay on this 2-vCPU machine while a thread computed with torch
(as the tracking loop does): thousands of empty wake-ups a second (216,181 in about a minute for
20 frames), up to 6,923 copies of one task in its list,
and frames waiting up to 2.2 s between the middleware and their callback. With this executor: two
wake-ups per frame and 0.4-0.7 ms from the middleware to the callback (bench/rclpy_pair.py
--executor compares them).

Here the spinning thread waits until a pool thread has picked the task up. That costs nothing while
a pool thread is free; when none is, it could not hand over anything else either. Everything else
is the stock executor's: the same wait set, callback groups, coroutines (one that awaits is resumed
on a later wake-up) and a callback's exception still ends ``spin()`` in the spinning thread.

Callbacks in an :class:`InlineCallbackGroup` (ones that only store a message) run in the spinning
thread itself: a hand-over to a pool thread would cost each message a thread switch and an
interpreter-lock hand-over for microseconds of work. (The node's camera input no longer passes
through the executor at all: frame_intake.py.)
"""

from __future__ import annotations

import inspect
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from rclpy.callback_groups import ReentrantCallbackGroup
from rclpy.executors import (
    ConditionReachedException,
    ExternalShutdownException,
    MultiThreadedExecutor,
    ShutdownException,
    TimeoutException,
)
from rclpy.task import Future, Task


class Parked:
    """Awaits an rclpy Future; :class:`HandoffExecutor` does not resume the coroutine before it is done.

    rclpy (Humble to Kilted) resumes every coroutine that has not finished on every wake-up of the
    executor, because a coroutine awaiting a Future does not say what it waits for. The node's
    service calls wait for the language model that way for seconds: with a camera at 30 Hz every
    waiting call was handed to a pool thread at each of the frame's wake-ups only to find its
    Future still pending, a thread switch and an interpreter-lock hand-over each time, which
    the tracking thread paid for (README, "Parked service calls"). Awaiting through this object
    says what the coroutine waits for. Other executors resume it as any awaitable.
    """

    __slots__ = ("future",)

    def __init__(self, future: Future) -> None:
        self.future = future

    def __await__(self) -> Parked:
        return self

    def __iter__(self) -> Parked:
        return self

    def __next__(self) -> None:
        if self.future.done():
            raise StopIteration(self.future.result())

    @property
    def waiting(self) -> bool:
        return not self.future.done()


def _parked(task: Task) -> bool:
    """True when the coroutine of ``task`` is suspended in a :class:`Parked` whose Future is pending.

    Follows the chain of awaited coroutines (rclpy's handler -> its service wrapper -> ours). Reads
    the Task's ``_handler`` (its coroutine; the same attribute from Humble to Kilted): where an rclpy
    lacks it, nothing counts as parked and the executor resumes every coroutine, as rclpy's own does.
    """
    awaited = getattr(task, "_handler", None)
    while inspect.iscoroutine(awaited):
        awaited = awaited.cr_await
    return isinstance(awaited, Parked) and awaited.waiting


class InlineCallbackGroup(ReentrantCallbackGroup):
    """Callbacks that return within microseconds and never block: HandoffExecutor runs them in its
    spinning thread (one at a time), other executors like any reentrant group."""


class HandoffExecutor(MultiThreadedExecutor):
    """Runs callbacks on ``num_threads`` pool threads; a task is never queued twice."""

    def __init__(self, num_threads: int, *, thread_name_prefix: str = "executor", context=None) -> None:
        super().__init__(num_threads=num_threads, context=context)
        # Our own pool (named threads show up as such in py-spy / top -H); the parent's stays unused
        # and, being lazy, never starts a thread.
        self._pool = ThreadPoolExecutor(num_threads, thread_name_prefix=thread_name_prefix)
        self._queue_lock = threading.Lock()
        self._picked_up = threading.Condition(self._queue_lock)
        self._queued: set[Task] = set()
        self._failed: list[Task] = []

    def _spin_once_impl(self, timeout_sec=None, wait_condition: Callable[[], bool] = lambda: False) -> None:
        try:
            task, entity, _node = self.wait_for_ready_callbacks(timeout_sec, None, wait_condition)
        except (ExternalShutdownException, ShutdownException, TimeoutException, ConditionReachedException):
            task, entity = None, None
        if task is not None and _parked(task):
            task = None  # it is yielded again at the next wake-up; its Future's completion is one
        if task is not None and isinstance(getattr(entity, "callback_group", None), InlineCallbackGroup):
            task()
            if task.done() and task.exception() is not None:
                task.result()  # raises the callback's exception, as the stock executor does
        elif task is not None:
            with self._queue_lock:
                fresh = task not in self._queued
                self._queued.add(task)
            if fresh:
                self._pool.submit(self._run, task)
            self._wait_until_picked_up(task)
        self._raise_failure()

    def _wait_until_picked_up(self, task: Task) -> None:
        # Waiting for new work while this task's message is still untaken does not block (the
        # wait set wakes at once, with nothing ready, until the pool thread has taken it): the
        # spinning thread would busy-loop, holding the interpreter lock the pool thread needs.
        # It waits instead; that costs nothing while a pool thread is free, and when none is, it
        # could not hand over any other work either.
        with self._picked_up:
            while task in self._queued and not self._is_shutdown:
                self._picked_up.wait(0.1)

    def _run(self, task: Task) -> None:
        with self._picked_up:
            # Before running it: a wake-up during the run may queue it again (a coroutine that
            # awaits must be resumed later), and Task itself refuses to run twice at once.
            self._queued.discard(task)
            self._picked_up.notify_all()
        task()
        if task.done() and task.exception() is not None:
            with self._queue_lock:
                self._failed.append(task)
            self._guard.trigger()  # let the spinning thread raise it now

    def _raise_failure(self) -> None:
        with self._queue_lock:
            failed = self._failed.pop(0) if self._failed else None
        if failed is not None:
            failed.result()  # raises the callback's exception, as the stock executor does

    def shutdown(self, timeout_sec: float | None = None) -> bool:
        done = super().shutdown(timeout_sec)
        self._pool.shutdown(wait=False, cancel_futures=True)
        # Callbacks handed to the pool but never started will not run now. Their Tasks hold a
        # coroutine made at hand-over; left as they are, each printed "coroutine ... was never
        # awaited" when collected, at the process's exit (after a bench's last line, in a node's
        # log). Close those (Jazzy's and Kilted's Task.cancel do, older rclpy only marks the task).
        with self._tasks_lock:
            handlers = [(task, getattr(task, "_handler", None)) for task, _entity, _node in self._tasks]
        for task, handler in handlers:
            if inspect.iscoroutine(handler) and inspect.getcoroutinestate(handler) == inspect.CORO_CREATED:
                task.cancel()
                handler.close()  # closing a closed coroutine does nothing
        return done
