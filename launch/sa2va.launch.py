"""Launch the sa2va node (language-grounded segmentation, tracking and chat on camera streams).

    ros2 launch sa2va_ros sa2va.launch.py
    ros2 launch sa2va_ros sa2va.launch.py model:=/data/Sa2VA-1B device:=cuda \\
        namespace:=robot image_topic:=/camera/color/image_raw
    ros2 launch sa2va_ros sa2va.launch.py demo_camera:=true overlay_rate:=10.0 rviz:=true

The node is a lifecycle node that configures and activates itself (``autostart:=true``); with
``autostart:=false`` it waits for ``ros2 lifecycle set /<namespace>/sa2va configure`` (or your
lifecycle manager). Every other parameter lives in the params file (config/sa2va.yaml, each one
documented there); the arguments below override it.
"""

from launch import LaunchDescription  # noqa: I001 (ruff takes launch/ for a first-party package)
from launch.actions import DeclareLaunchArgument, SetEnvironmentVariable
from launch.conditions import IfCondition
from launch.substitutions import (
    EnvironmentVariable,
    LaunchConfiguration,
    PathJoinSubstitution,
    PythonExpression,
)
from launch_ros.actions import LifecycleNode, Node
from launch_ros.substitutions import FindPackageShare

ARGUMENTS = (
    ("model", "ByteDance/Sa2VA-1B", "Sa2VA checkpoint: hub id or local folder"),
    ("device", "auto", "auto, cpu, cuda or cuda:N"),
    ("dtype", "auto", "auto, float32, bfloat16 or float16"),
    ("namespace", "", "namespace of the node and its topics"),
    ("node_name", "sa2va", "name of the node"),
    ("image_topic", "image", "camera image topic (remapped to the node's `image`)"),
    ("image_transport", "raw", "raw or compressed (subscribes <image_topic>/compressed)"),
    ("image_qos_reliability", "best_effort", "best_effort or reliable, to match the camera"),
    ("overlay_rate", "0.0", "overlay images per second for RViz (0 = off)"),
    ("depth_enabled", "false", "RGB-D: read depth_topic + camera_info_topic, publish 3D positions"),
    ("autostart", "true", "configure and activate on start-up"),
    ("demo_camera", "false", "also start sa2va_demo_camera, a synthetic moving scene"),
    ("rviz", "false", "also start RViz with config/sa2va.rviz"),
    ("log_level", "info", "ROS log level of the node"),
)


def generate_launch_description() -> LaunchDescription:
    share = FindPackageShare("sa2va_ros")
    args = [
        DeclareLaunchArgument(name, default_value=default, description=doc)
        for name, default, doc in ARGUMENTS
    ]
    args.append(
        DeclareLaunchArgument(
            "params_file",
            default_value=PathJoinSubstitution([share, "config", "sa2va.yaml"]),
            description="YAML file with the node's parameters (the arguments above override it)",
        )
    )
    cfg = {name: LaunchConfiguration(name) for name in [a[0] for a in ARGUMENTS] + ["params_file"]}

    # Camera images over 512 KB sent best_effort need a larger Fast DDS shared-memory segment
    # (config/fastdds_large_data.xml explains); a profile the user already exported wins.
    large_data = SetEnvironmentVariable(
        "FASTDDS_DEFAULT_PROFILES_FILE",
        EnvironmentVariable(
            "FASTDDS_DEFAULT_PROFILES_FILE",
            default_value=PathJoinSubstitution([share, "config", "fastdds_large_data.xml"]),
        ),
    )
    sa2va = LifecycleNode(
        package="sa2va_ros",
        executable="sa2va_node",
        name=cfg["node_name"],
        namespace=cfg["namespace"],
        output="screen",
        parameters=[
            cfg["params_file"],
            {
                "model": cfg["model"],
                "device": cfg["device"],
                "dtype": cfg["dtype"],
                "image_transport": cfg["image_transport"],
                "image_qos_reliability": cfg["image_qos_reliability"],
                "overlay_rate": cfg["overlay_rate"],
                "depth_enabled": cfg["depth_enabled"],
                "autostart": cfg["autostart"],
            },
        ],
        remappings=[("image", cfg["image_topic"]), ("image/compressed", [cfg["image_topic"], "/compressed"])],
        arguments=["--ros-args", "--log-level", cfg["log_level"]],
    )
    demo_camera = Node(
        package="sa2va_ros",
        executable="sa2va_demo_camera",
        namespace=cfg["namespace"],
        output="screen",
        # JPEG frames too only when the node is told to take them.
        parameters=[
            {
                "topic": cfg["image_topic"],
                "compressed": PythonExpression(["'", cfg["image_transport"], "' == 'compressed'"]),
            }
        ],
        condition=IfCondition(cfg["demo_camera"]),
    )
    rviz = Node(
        package="rviz2",
        executable="rviz2",
        arguments=["-d", PathJoinSubstitution([share, "config", "sa2va.rviz"])],
        output="screen",
        condition=IfCondition(cfg["rviz"]),
    )
    return LaunchDescription([*args, large_data, sa2va, demo_camera, rviz])
