"""sa2va_ros: Sa2VA (SAM-2 + a vision-language model) for ROS 2 robots.

``sa2va_ros.model`` is the ROS-free model core; ``sa2va_ros.node`` the ROS 2 node.
"""

# The generated interfaces (sa2va_ros.msg / .srv / .action) are installed by the rosidl build
# into another folder named sa2va_ros (the venv's site-packages or a colcon install space).
# Extending __path__ merges that folder with these sources, so both import as one package.
from pkgutil import extend_path

__path__ = extend_path(__path__, __name__)
__version__ = "0.1.0"
