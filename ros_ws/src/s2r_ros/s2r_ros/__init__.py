"""ROS 2 nodes of s2r (thin wrappers over the libraries)."""
