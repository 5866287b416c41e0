"""sa2va_ros: Sa2VA (SAM-2 + a vision-language model) for ROS 2 robots.

``sa2va_ros.model`` is the ROS-free model core; ``sa2va_ros.node`` the ROS 2 node. The node's
messages, services and action live in the separate interface package ``sa2va_msgs``.
"""

__version__ = "0.1.0"
