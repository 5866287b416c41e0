"""``sa2va_node``: run the sa2va lifecycle node.

    sa2va_node --ros-args -p model:=ByteDance/Sa2VA-1B -p device:=cuda

By default the node configures and activates itself (``autostart``), so users who do not
manage lifecycles just run it; with ``-p autostart:=false`` it waits, unconfigured, for
``ros2 lifecycle set`` (or a launch file's lifecycle manager). Ctrl-C / SIGTERM stop the
threads and free the model before the process exits.
"""

from __future__ import annotations

import logging
import sys
import threading
from collections.abc import Sequence

import rclpy
from rclpy.executors import ExternalShutdownException

from .executor import HandoffExecutor
from .memory import tune_allocator
from .node import Sa2VANode


class _RosLogHandler(logging.Handler):
    """Forwards the model core's Python logging (e.g. loading progress) to the node's ROS logger."""

    def __init__(self, node: Sa2VANode):
        super().__init__(logging.INFO)
        self._logger = node.get_logger()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = f"[{record.name}] {record.getMessage()}"
            if record.levelno >= logging.ERROR:
                self._logger.error(text)
            elif record.levelno >= logging.WARNING:
                self._logger.warning(text)
            else:
                self._logger.info(text)
        except Exception:  # noqa: BLE001 - logging must never raise
            pass


def main(argv: Sequence[str] | None = None) -> int:
    allocator = tune_allocator()  # before rclpy.init starts the middleware's threads
    rclpy.init(args=list(argv) if argv is not None else sys.argv)
    node: Sa2VANode | None = None
    executor: HandoffExecutor | None = None
    handler: logging.Handler | None = None
    package_logger = logging.getLogger("sa2va_ros")
    try:
        node = Sa2VANode()
        node.get_logger().info(allocator)
        handler = _RosLogHandler(node)
        package_logger.addHandler(handler)
        package_logger.setLevel(logging.INFO)
        executor = HandoffExecutor(node.executor_threads, thread_name_prefix="sa2va-callbacks")
        executor.add_node(node)
        if node.autostart:
            threading.Thread(target=node.bring_up, name="sa2va-autostart", daemon=True).start()
        else:
            node.get_logger().info(
                "autostart is false: waiting for lifecycle commands (ros2 lifecycle set "
                f"{node.get_fully_qualified_name()} configure)"
            )
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        if node is not None:
            node.shutdown()
        if executor is not None:
            executor.shutdown(timeout_sec=5.0)
        if node is not None:
            node.destroy_node()
        if handler is not None:
            package_logger.removeHandler(handler)
        rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
