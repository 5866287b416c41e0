"""Launch the sa2va node (language-grounded segmentation, tracking and chat on camera streams).

    ros2 launch sa2va_ros sa2va.launch.py
    ros2 launch sa2va_ros sa2va.launch.py model:=/data/Sa2VA-1B device:=cuda \\
        namespace:=robot image_topic:=/camera/color/image_raw
    ros2 launch sa2va_ros sa2va.launch.py params_file:=my.yaml overlay_rate:=10.0
    ros2 launch sa2va_ros sa2va.launch.py demo_camera:=true overlay_rate:=10.0 rviz:=true

The node is a lifecycle node that configures and activates itself (``autostart``); with
``autostart:=false`` it waits for ``ros2 lifecycle set /<namespace>/sa2va configure`` (or your
lifecycle manager). Every parameter lives in the params file (config/sa2va.yaml by default, each
one documented there); a node-parameter argument overrides it only when given. What starts is
decided by sa2va_ros.launch_args.plan (tested without launch_ros): bad arguments, a missing params
file or rviz:=true without rviz2 stop the launch before any process starts.
"""

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription  # noqa: I001 (ruff takes launch/ for a first-party package)
from launch.actions import DeclareLaunchArgument, OpaqueFunction, SetEnvironmentVariable
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import LifecycleNode, Node

from sa2va_ros.launch_args import ARGUMENTS, plan


def _start(context, *args, **kwargs):
    values = {name: LaunchConfiguration(name).perform(context) for name, _, _ in ARGUMENTS}
    chosen = plan(values, get_package_share_directory("sa2va_ros"))  # raises before anything starts
    actions = [SetEnvironmentVariable(name, value) for name, value in chosen.environment.items()]
    actions.append(
        LifecycleNode(
            package="sa2va_ros",
            executable="sa2va_node",
            name=chosen.node_name,
            namespace=chosen.namespace,
            output="screen",
            parameters=chosen.parameters,
            remappings=chosen.remappings,
            arguments=["--ros-args", "--log-level", chosen.log_level],
        )
    )
    if chosen.demo_camera is not None:
        actions.append(
            Node(
                package="sa2va_ros",
                executable="sa2va_demo_camera",
                namespace=chosen.namespace,
                output="screen",
                parameters=[chosen.demo_camera],
            )
        )
    if chosen.rviz_config is not None:
        actions.append(
            Node(
                package="rviz2",
                executable="rviz2",
                arguments=["-d", chosen.rviz_config],
                output="screen",
            )
        )
    return actions


def generate_launch_description() -> LaunchDescription:
    arguments = [
        DeclareLaunchArgument(name, default_value=default, description=doc)
        for name, default, doc in ARGUMENTS
    ]
    return LaunchDescription([*arguments, OpaqueFunction(function=_start)])
