"""applctl's console entry point (pyproject: applctl = "appliance.applctl:main").

The commands live in appliance/cli/, one module per group.
"""

from .cli.app import cli, main

__all__ = ["cli", "main"]

if __name__ == "__main__":
    main()
