"""The ROS-free Sa2VA model core (importing it never imports rclpy)."""
