"""The leaf every layer may import: config loading and the joint-spec types it produces
(`types`), YAML reading (`yamlio`), logging and progress (`logs`), run folders (`rundir`), ROS
environment helpers (`ros_env`), the joint limiter (`joint_limiter`) and video writing (`video`).
It imports nothing of this project's outside itself (checked by import-linter in `make test`)."""
