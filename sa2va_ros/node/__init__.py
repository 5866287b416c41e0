"""The ROS 2 node around the model core (rclpy). ``sa2va_node`` runs :func:`main.main`."""
