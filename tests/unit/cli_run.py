"""Running applctl in-process, as its unit tests do."""

import pytest

from appliance.applctl import main


def run(capsys, *args: str) -> tuple[int, str, str]:
    """applctl ARGS -> (exit code, stdout, stderr)."""
    with pytest.raises(SystemExit) as e:
        main(list(args))
    out = capsys.readouterr()
    return e.value.code, out.out, out.err
