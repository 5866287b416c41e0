"""sa2va_node's executor (sa2va_ros/node/executor.py) on real rclpy entities in this process.

While another thread computes with torch (as the tracking loop does), each message must be handed
to the pool once and the spinning thread must then wait, not loop: rclpy's MultiThreadedExecutor
loops here thousands of times per message (its wait returns at once until the message is taken).
The rest is the stock executor's contract: coroutines that await are resumed, a callback's
exception ends spin(), shutdown ends it too.
"""

from __future__ import annotations

import threading
import time

import pytest

rclpy = pytest.importorskip("rclpy", reason="rclpy comes from the venv made by scripts/setup.sh")
from rclpy.node import Node  # noqa: E402
from rclpy.qos import QoSProfile, ReliabilityPolicy  # noqa: E402
from rclpy.task import Future  # noqa: E402
from std_msgs.msg import String  # noqa: E402

from sa2va_ros.node.executor import HandoffExecutor, InlineCallbackGroup, Parked  # noqa: E402

pytestmark = pytest.mark.ros


@pytest.fixture
def context():
    ctx = rclpy.context.Context()
    rclpy.init(context=ctx)
    yield ctx
    rclpy.try_shutdown(context=ctx)


def _spin(executor: HandoffExecutor) -> tuple[threading.Thread, list[BaseException]]:
    errors: list[BaseException] = []

    def run() -> None:
        try:
            executor.spin()
        except BaseException as exc:  # noqa: BLE001 - the test reads it
            errors.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, errors


def _wait_for_subscribers(pub, count: int, timeout: float = 20.0) -> None:
    """Discovery: the first message to a subscription not yet matched would be lost."""
    deadline = time.monotonic() + timeout
    while pub.get_subscription_count() < count and time.monotonic() < deadline:
        time.sleep(0.05)


def _counting_yields(executor: HandoffExecutor) -> list[int]:
    """Counts what the spinning thread is handed: one per loop of the wait."""
    count = [0]
    original = executor.wait_for_ready_callbacks

    def counted(*args, **kwargs):
        result = original(*args, **kwargs)
        count[0] += 1
        return result

    executor.wait_for_ready_callbacks = counted
    return count


def test_each_message_is_handed_over_once_while_torch_computes(context):
    torch = pytest.importorskip("torch")
    node = Node("handoff_subject", context=context)
    sender = Node("handoff_sender", context=context)
    qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
    got: list[str] = []
    arrived = threading.Event()

    def on_message(msg: String) -> None:
        got.append(msg.data)
        arrived.set()

    node.create_subscription(String, "handoff", on_message, qos)
    pub = sender.create_publisher(String, "handoff", qos)
    executor = HandoffExecutor(4, context=context)
    executor.add_node(node)
    yields = _counting_yields(executor)
    thread, errors = _spin(executor)

    stop = threading.Event()

    def compute() -> None:  # takes and drops the interpreter lock between operations
        a = torch.randn(128, 128)
        while not stop.is_set():
            a @ a

    torch.set_num_threads(1)
    worker = threading.Thread(target=compute, daemon=True)
    try:
        _wait_for_subscribers(pub, 1)
        worker.start()
        before = yields[0]
        for i in range(20):
            arrived.clear()
            pub.publish(String(data=str(i)))
            assert arrived.wait(10), f"message {i} never reached its callback"
            time.sleep(0.02)
        handed = yields[0] - before
    finally:
        stop.set()
        executor.shutdown(timeout_sec=5)
        thread.join(5)
        node.destroy_node()
        sender.destroy_node()
    assert got == [str(i) for i in range(20)]
    assert not errors
    # One hand-over per message, and a few for the guard the handler triggers; rclpy's own
    # MultiThreadedExecutor loops thousands of times per message here.
    assert handed <= 3 * 20, f"{handed} hand-overs for 20 messages"


def test_awaiting_coroutines_resume_and_errors_end_spin(context):
    node = Node("handoff_coroutines", context=context)
    executor = HandoffExecutor(2, context=context)
    executor.add_node(node)
    gate = Future(executor=executor)
    gate.add_done_callback(lambda _future: None)  # scheduled on the executor: that wakes it
    resumed = threading.Event()

    async def waits_for_gate() -> None:
        await gate
        resumed.set()

    def fails() -> None:
        raise RuntimeError("callback failed")

    executor.create_task(waits_for_gate)
    thread, errors = _spin(executor)
    try:
        time.sleep(0.3)
        assert not resumed.is_set()
        gate.set_result(True)  # wakes the executor; the coroutine is resumed on a pool thread
        assert resumed.wait(5), "an awaiting coroutine was not resumed"
        executor.create_task(fails)
        thread.join(5)
        assert not thread.is_alive(), "a callback's exception did not end spin()"
        assert len(errors) == 1 and str(errors[0]) == "callback failed"
    finally:
        executor.shutdown(timeout_sec=5)
        node.destroy_node()


def test_a_parked_coroutine_is_resumed_only_when_its_future_is_done(context):
    """rclpy resumes every waiting coroutine at every wake-up; one awaiting Parked is left alone."""
    node = Node("handoff_parked", context=context)
    executor = HandoffExecutor(2, context=context)
    executor.add_node(node)
    woken = [0]
    node.create_timer(0.005, lambda: woken.__setitem__(0, woken[0] + 1))  # 200 wake-ups a second

    class Counted(Parked):
        resumed = 0

        def __next__(self) -> None:
            Counted.resumed += 1
            return super().__next__()

    gate = Future(executor=executor)
    gate.add_done_callback(lambda _future: None)  # scheduled on the executor: that wakes it
    result: list = []

    async def parked() -> None:
        result.append(await Counted(gate))

    executor.create_task(parked)
    thread, errors = _spin(executor)
    try:
        time.sleep(0.5)
        assert woken[0] > 20, "the timer did not wake the executor"
        assert Counted.resumed == 1, f"a parked coroutine was resumed {Counted.resumed} times, not once"
        gate.set_result("done")
        deadline = time.monotonic() + 5
        while not result and time.monotonic() < deadline:
            time.sleep(0.01)
        assert result == ["done"] and Counted.resumed == 2 and not errors
    finally:
        executor.shutdown(timeout_sec=5)
        node.destroy_node()


def test_shutdown_ends_spin(context):
    node = Node("handoff_shutdown", context=context)
    executor = HandoffExecutor(2, context=context)
    executor.add_node(node)
    thread, errors = _spin(executor)
    time.sleep(0.2)
    assert executor.shutdown(timeout_sec=5)
    thread.join(5)
    assert not thread.is_alive() and not errors
    node.destroy_node()


def test_inline_callbacks_run_in_the_spinning_thread_others_in_the_pool(context):
    node = Node("handoff_inline", context=context)
    sender = Node("handoff_inline_sender", context=context)
    qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
    threads: dict[str, str] = {}
    both = threading.Event()

    def recorder(name: str):
        def on_message(_msg: String) -> None:
            threads[name] = threading.current_thread().name
            if len(threads) == 2:
                both.set()

        return on_message

    node.create_subscription(String, "inline", recorder("inline"), qos, callback_group=InlineCallbackGroup())
    node.create_subscription(String, "inline", recorder("pooled"), qos)
    pub = sender.create_publisher(String, "inline", qos)
    executor = HandoffExecutor(2, thread_name_prefix="pool", context=context)
    executor.add_node(node)
    thread, errors = _spin(executor)
    try:
        _wait_for_subscribers(pub, 2)
        pub.publish(String(data="x"))
        assert both.wait(10), threads
    finally:
        executor.shutdown(timeout_sec=5)
        thread.join(5)
        node.destroy_node()
        sender.destroy_node()
    assert threads["inline"] == thread.name and threads["pooled"].startswith("pool"), threads
    assert not errors


def _shut_down_with_a_callback_waiting(context) -> list[BaseException]:
    """Spin a 1-thread executor whose pool thread is held while a second timer callback waits for
    it; shut down then. Everything made here is unreachable once this returns."""
    from rclpy.callback_groups import ReentrantCallbackGroup

    node = Node("handoff_dropped", context=context)
    group = ReentrantCallbackGroup()
    release, started, queued = threading.Event(), threading.Event(), threading.Event()

    def hold_the_only_pool_thread() -> None:
        started.set()
        release.wait(10)

    node.create_timer(0.01, hold_the_only_pool_thread, callback_group=group)
    executor = HandoffExecutor(1, context=context)
    executor.add_node(node)
    original = executor._wait_until_picked_up

    handed_over = []

    def noting_queued(task) -> None:  # the spinning thread waits here with each handed-over task
        handed_over.append(1)
        if len(handed_over) == 2:  # the second: the only pool thread is held by the first
            queued.set()
        original(task)

    executor._wait_until_picked_up = noting_queued
    thread, errors = _spin(executor)
    try:
        assert started.wait(10) and queued.wait(10)
        assert executor.shutdown(timeout_sec=5)
    finally:
        release.set()
        thread.join(5)
        node.destroy_node()
    return errors


def test_shutdown_closes_callbacks_it_never_ran(context):
    """A callback handed to the pool but not started when the executor shuts down is dropped with
    its coroutine closed: no "coroutine ... was never awaited" warning later (one came at a bench's
    exit, after its JSON line)."""
    import gc
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        errors = _shut_down_with_a_callback_waiting(context)
        gc.collect()
    never_awaited = [str(w.message) for w in caught if "never awaited" in str(w.message)]
    assert not never_awaited and not errors, (never_awaited, errors)
