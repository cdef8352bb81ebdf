"""The system tests' fixtures live in booted.py, a plugin of tests/conftest.py, so that
tests/packaging shares them; their names are here too, for `from conftest import`."""

from booted import HUB_PY, TOP, USERS, Appliance, free_port  # noqa: F401
