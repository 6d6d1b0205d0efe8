"""Shared by the launch files: turn an s2r bringup YAML into launch_ros Node actions.

The same YAML drives `s2r launch` (pip-only ROS 2, s2r/launch/, which also parses it here), so
a bringup is written once for both paths.
"""
import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction, Shutdown
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node


def node_actions(bringup):
    """launch_ros Nodes for every node of a parsed `s2r.launch.Bringup`."""
    actions = []
    for n in bringup.nodes:
        kw = dict(package=n.package, executable=n.executable, name=n.name, parameters=[n.parameters],
                  remappings=list(n.remappings.items()), arguments=list(n.args),
                  additional_env=dict(bringup.env, **n.env),
                  output="log" if n.output == "quiet" else "screen")
        if n.namespace:
            kw["namespace"] = n.namespace
        if n.log_level:
            kw["ros_arguments"] = ["--log-level", n.log_level]
        if n.required or n.exit_when_done:
            kw["on_exit"] = Shutdown(reason=f"{n.name} exited")
        actions.append(Node(**kw))
    return actions


def describe(default_bringup):
    """A LaunchDescription with a `bringup:=PATH` argument (default: this package's YAML)."""
    default = os.path.join(get_package_share_directory("s2r_ros"), "bringup", default_bringup)

    def nodes(context):
        from s2r.launch import load_bringup
        return node_actions(load_bringup(LaunchConfiguration("bringup").perform(context)))

    return LaunchDescription([
        DeclareLaunchArgument("bringup", default_value=default, description="s2r bringup YAML"),
        OpaqueFunction(function=nodes),
    ])
