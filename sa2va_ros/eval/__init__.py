"""``sa2va-eval``: reproduce the Sa2VA paper's segmentation numbers and score your own recordings.

ROS-free: it needs the model core (``sa2va_ros.model``) only for running a model; the
metrics (:mod:`.metrics`) and the scoring of masks already on disk need numpy and OpenCV.
"""
