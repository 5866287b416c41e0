"""Support for tests and benchmarks (checkpoint writers, real-size configs).

Never imported by the model core (sa2va_ros/model).
"""
