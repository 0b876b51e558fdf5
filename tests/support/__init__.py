"""Real parts for tests: nginx, stand-in vendor artifacts, loop devices."""
