"""Helper programs that tests run as subprocesses (to kill them with SIGKILL, or to publish from
separate processes). Each is `python tests/procs/<name>.py --help`."""
