"""The system tests' fixtures live in booted.py, a plugin of tests/conftest.py, so that
tests/packaging shares them. Test modules import its names from `booted`, never from
`conftest`: with the whole of tests/ collected, `conftest` is tests/conftest.py."""

from booted import HUB_PY, TOP, USERS, Appliance, free_port  # noqa: F401
