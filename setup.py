"""pip installation of the sa2va_ros Python package (the pip-only virtual environment).

In a colcon workspace the package is built by CMakeLists.txt (ament_cmake) instead; this
file then only serves `pip install -e .` for development.
"""

from setuptools import find_packages, setup

setup(
    name="sa2va_ros",
    version="0.1.0",
    description="ROS 2 node for language-grounded segmentation, tracking and chat with Sa2VA",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=find_packages(include=["sa2va_ros", "sa2va_ros.*"]),
    package_data={"sa2va_ros": ["py.typed"]},
    # Dependencies are installed by scripts/setup.sh from requirements/*.txt, because torch must
    # come from the user's platform (NVIDIA wheels on Jetson) and never be pulled in here.
    install_requires=[],
    entry_points={
        "console_scripts": [
            "sa2va = sa2va_ros.cli:main",
            "sa2va-eval = sa2va_ros.eval.cli:main",
            "sa2va_node = sa2va_ros.node.main:main",
            "sa2va_demo_camera = sa2va_ros.demo_camera:main",
        ]
    },
)
