"""What the system tier's container (system/container.py) and the real-kernel tier's
VM (vm/vm.py) have in common: a booted Debian driven from the host. A subclass says
only how a command gets in (`_argv`: nsenter or ssh); running it, writing a file,
waiting for a command or a unit and reading unit properties are written here once.
`OnMachine` is the appliance installed on one: its shell, unit properties and the
wait for its hub, shared by the tiers' `appliance` and `machine` fixtures.
"""

from __future__ import annotations

import shlex
import subprocess
import time

import requests


class MachineError(RuntimeError):
    pass


def parse_unit_props(out: str, names: tuple[str, ...]) -> dict[str, str]:
    """The output of `systemctl show -p NAME...`, by name; every name asked for is there.

    systemctl prints a list property in one of two ways, by property: one line per
    entry (DeviceAllow=, Environment= when set in several places, ExecStart=), or one
    line with its entries separated by spaces (IPAddressDeny=, BindReadOnlyPaths=,
    TemporaryFileSystem=). The lines of a property that comes on several lines are
    joined here by newlines, in systemctl's order, never reduced to the last one; an
    empty list prints nothing, or a bare `NAME=`, and is "". The value is everything
    after the first "=" (a value may hold "=" itself).
    """
    props: dict[str, list[str]] = {n: [] for n in names}
    for line in out.splitlines():
        key, eq, value = line.partition("=")
        if eq and key in props and value != "":
            props[key].append(value)
    return {k: "\n".join(v) for k, v in props.items()}


class Machine:
    """A booted machine; subclasses set `name` and `Error` and give `_argv`."""

    name: str
    Error: type[MachineError] = MachineError
    ENV: dict[str, str] | None = None  # the environment of the host-side command, if not the runner's

    def _argv(self, command: str, user: str | None) -> list[str]:
        """The host command that runs the shell command `command` inside, as root or `user`."""
        raise NotImplementedError

    def run(self, command: str, check: bool = True, timeout: float = 600, input: str | None = None,
            user: str | None = None) -> subprocess.CompletedProcess:
        """A shell command inside, as root or as `user`. Its own session on the host, so
        its process group holds only the helper (nsenter, ssh) and the shell: a `kill 0`
        (or a signal to a pid read as 0) inside cannot reach pytest. A timeout raises with
        check, else comes back as exit code 124."""
        argv = self._argv(command, user)
        try:
            proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, input=input, env=self.ENV,
                                  start_new_session=True)
        except subprocess.TimeoutExpired as e:
            if check:
                raise self.Error(f"in {self.name}: {command!r} timed out after {timeout} s") from e
            return subprocess.CompletedProcess(argv, 124, "", "timeout")
        if check and proc.returncode != 0:
            raise self.Error(f"in {self.name}: {command!r} exited {proc.returncode}\n"
                             f"{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
        return proc

    def write(self, path: str, text: str, mode: int = 0o644) -> None:
        """A file inside with this text (its directories made), owned by root."""
        q = shlex.quote(path)
        self.run(f"mkdir -p \"$(dirname {q})\" && cat > {q} && chmod {mode:o} {q}", input=text)

    def wait_for(self, command: str, timeout: float = 60) -> subprocess.CompletedProcess:
        """Until `command` succeeds; its last failure in the error if it never does."""
        deadline = time.monotonic() + timeout
        while True:
            proc = self.run(command, check=False)
            if proc.returncode == 0:
                return proc
            if time.monotonic() > deadline:
                raise self.Error(f"in {self.name}: {command!r} still failing after {timeout} s:\n"
                                 f"{proc.stdout}{proc.stderr}")
            time.sleep(0.5)

    def unit_props(self, unit: str, *names: str) -> dict[str, str]:
        """Properties of a unit as `systemctl show` prints them (parse_unit_props)."""
        out = self.run(f"systemctl show {shlex.quote(unit)} " + " ".join(f"-p {n}" for n in names)).stdout
        return parse_unit_props(out, names)

    def wait_unit(self, unit: str, states: tuple[str, ...] = ("active",), timeout: float = 60) -> str:
        """Until the unit's ActiveState is one of `states`; returns it."""
        deadline = time.monotonic() + timeout
        while True:
            state = self.unit_props(unit, "ActiveState")["ActiveState"]
            if state in states:
                return state
            if time.monotonic() > deadline:
                raise self.Error(f"in {self.name}: {unit} is {state!r}, not {' or '.join(states)}, after {timeout} s")
            time.sleep(0.3)


class OnMachine:
    """The appliance installed on a Machine (`machine`), its hub at `url`."""

    machine: Machine
    url: str

    def sh(self, command: str, check: bool = True, user: str | None = None, input: str | None = None,
           timeout: float = 600) -> subprocess.CompletedProcess:
        return self.machine.run(command, check=check, user=user, input=input, timeout=timeout)

    def unit_props(self, unit: str, *names: str) -> dict[str, str]:
        return self.machine.unit_props(unit, *names)

    def wait_hub(self, timeout: float = 90) -> None:
        """Until the hub answers its API through the proxy."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                if requests.get(self.url + "/hub/api/", timeout=5).status_code == 200:
                    return
            except requests.RequestException:
                pass
            if time.monotonic() > deadline:
                logs = self.sh("journalctl -u jupyterhub -u jupyterhub-proxy -n 40 --no-pager", check=False).stdout
                raise AssertionError(f"the hub on {self.machine.name} did not answer in {timeout} s:\n{logs}")
            time.sleep(0.3)
