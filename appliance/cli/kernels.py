"""`applctl kernels`: existing Python environments as Jupyter kernels for every user.

A kernel is a kernelspec in /usr/local/share/jupyter/kernels, which is on every
server's Jupyter data path; its argv is the environment's own python, so the
notebook imports that environment's packages. A conda environment's kernel first
runs the environment's activation scripts (etc/conda/activate.d/*.sh), as `conda
activate` would, so that CUDA libraries and the like from conda packages are found.
Before it is registered, the interpreter is tried as an ordinary user (nobody),
because every user's kernel runs it: a path in a private home would work for root
and fail for everyone else.
"""

from __future__ import annotations

import json
import os
import pwd
import re
import shlex
import shutil
import subprocess
import tempfile
from pathlib import Path

import click

from .. import privilege
from ..groups import SYSTEM_KERNELS, USER_ENV
from .completion import kernel_names
from .output import Failure, emit, example, json_option, need_root, table

KERNEL_DIR = Path(SYSTEM_KERNELS)
# Where Jupyter also finds kernels; the user environment's own wins over ours.
OTHER_DIRS = (Path(USER_ENV) / "share/jupyter/kernels", Path("/usr/share/jupyter/kernels"))
MARK = "jupyterhub_appliance"
NAME_RE = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")
NAME_RULE = "1 to 64 characters: lowercase letters, digits, '.', '_', '-', starting with a letter or digit"
PROBE = ("import json, sys, ipykernel; print(json.dumps({'version': '%d.%d.%d' % sys.version_info[:3], "
         "'prefix': sys.prefix, 'ipykernel': ipykernel.__version__}))")
PROBE_TIMEOUT = 60


def find_kernels(dirs: tuple[Path, ...] | None = None) -> list[dict]:
    """Every kernel users see, the first of a name winning as in Jupyter's search."""
    dirs = dirs or (OTHER_DIRS[0], KERNEL_DIR, OTHER_DIRS[1])
    seen: dict[str, dict] = {}
    for d in dirs:
        for spec_file in sorted(d.glob("*/kernel.json")):
            name = spec_file.parent.name.lower()
            if name in seen:
                continue
            try:
                spec = json.loads(spec_file.read_text())
                mine = spec.get("metadata", {}).get(MARK) or {}
                python = mine.get("python") or spec["argv"][0]  # a conda kernel's argv[0] is bash
            except (OSError, ValueError, KeyError, IndexError, TypeError, AttributeError):
                spec, mine, python = {}, {}, None
            source = "applctl" if mine else "built-in" if d == OTHER_DIRS[0] else "other"
            usable = python is not None and (os.sep not in python or os.access(python, os.X_OK))
            kind = mine.get("kind") or (env_kind(Path(python).parent.parent) if python and os.sep in python else None)
            seen[name] = {"name": name, "display_name": spec.get("display_name"), "python": python,
                          "kind": kind, "python_version": mine.get("version"),
                          "source": source, "location": str(spec_file.parent), "usable": usable}
    return list(seen.values())


def env_kind(prefix: Path) -> str:
    """"conda" (a conda-meta/ directory), "venv" (a pyvenv.cfg), or "python"."""
    return "conda" if (prefix / "conda-meta").is_dir() else "venv" if (prefix / "pyvenv.cfg").is_file() else "python"


def check_name(name: str) -> str:
    if not NAME_RE.fullmatch(name):
        raise Failure(f"{name[:60]!r} is not a kernel name: {NAME_RULE}")
    return name


def probe(python: str) -> dict:
    """Run the interpreter as nobody; what it is, or why it cannot be a kernel."""
    nobody = pwd.getpwnam("nobody")
    try:
        proc = subprocess.run([python, "-c", PROBE], user=nobody.pw_uid, group=nobody.pw_gid, extra_groups=[],
                              cwd="/", capture_output=True, text=True, timeout=PROBE_TIMEOUT,
                              env={"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": "/nonexistent", "LANG": "C.UTF-8"})
    except PermissionError:
        raise Failure(f"--python {python}: an ordinary user may not run it (permission denied); every user's "
                      "kernel runs it, so it and its environment must be readable and executable by all") from None
    except OSError as e:
        raise Failure(f"--python {python} is not a working Python interpreter ({e.strerror})") from None
    except subprocess.TimeoutExpired:
        raise Failure(f"--python {python} did not answer in {PROBE_TIMEOUT} s") from None
    if proc.returncode != 0:
        said = proc.stderr.strip().splitlines()
        if "No module named 'ipykernel'" in proc.stderr:
            raise Failure(f"{python} has no ipykernel; install it into that environment: "
                          f"{python} -m pip install ipykernel (conda: conda install -p ENV ipykernel)")
        raise Failure(f"--python {python} is not a working Python interpreter: {said[-1] if said else 'it failed'}")
    try:
        return json.loads(proc.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        raise Failure(f"--python {python} is not a Python interpreter (it did not run Python code)") from None


def kernel_spec(python: str, display_name: str, info: dict, prefix: str, kind: str) -> dict:
    env = {"PATH": f"{os.path.dirname(python)}:/usr/local/bin:/usr/bin:/bin"}  # its pip, its tools
    argv = [python, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    if kind == "conda":
        env |= {"CONDA_PREFIX": prefix, "CONDA_DEFAULT_ENV": os.path.basename(prefix)}
        # What `conda activate` runs, in bash as conda does; then the kernel itself.
        # Jupyter fills in {connection_file}; bash gets it as $0.
        scripts = shlex.quote(f"{prefix}/etc/conda/activate.d") + "/*.sh"
        argv = ["/bin/bash", "-c", f'for f in {scripts}; do [ -r "$f" ] && . "$f"; done; '
                f'exec {shlex.quote(python)} -m ipykernel_launcher -f "$0"', "{connection_file}"]
    return {"argv": argv, "display_name": display_name, "language": "python", "env": env,
            "metadata": {"debugger": True, MARK: {"python": python, "prefix": prefix, "kind": kind,
                                                  "version": info["version"]}}}


def write_kernel(name: str, spec: dict) -> Path:
    """Appears whole or not at all: written aside, then renamed into place."""
    KERNEL_DIR.mkdir(mode=0o755, parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=KERNEL_DIR, prefix=f".{name}."))
    try:
        (tmp / "kernel.json").write_text(json.dumps(spec, indent=2) + "\n")
        (tmp / "kernel.json").chmod(0o644)
        tmp.chmod(0o755)
        tmp.rename(KERNEL_DIR / name)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return KERNEL_DIR / name / "kernel.json"


@click.group()
def kernels() -> None:
    """Jupyter kernels every user sees: register existing Python environments.

    \b
    Example:
      sudo applctl kernels add torch --env /opt/conda/envs/torch
    """


@kernels.command(name="list")
@json_option
@example("applctl kernels list")
def list_kernels(as_json: bool) -> None:
    """The kernels every user sees, and where each comes from."""
    rows = find_kernels()
    emit(as_json, rows, table(["NAME", "DISPLAY NAME", "KIND", "VERSION", "PYTHON", "SOURCE", "STATUS"],
                              [[k["name"], k["display_name"], k["kind"] or "-", k["python_version"] or "-",
                                k["python"], k["source"], "ok" if k["usable"] else "failed"] for k in rows],
                              painted=(6,)))


@kernels.command()
@click.argument("name_arg", metavar="[NAME]", required=False)
@click.option("--name", help=f"the kernel's name (or give it as NAME): {NAME_RULE}")
@click.option("--env", "prefix", metavar="PREFIX",
              help="the environment's directory: a conda environment (e.g. /opt/conda/envs/torch) or a venv")
@click.option("--python", "python", metavar="PATH",
              help="or the environment's python, e.g. /opt/venvs/torch/bin/python")
@click.option("--display-name", help='what the launcher shows (default: "Python X.Y.Z (NAME)")')
@json_option
@example("sudo applctl kernels add torch --env /opt/conda/envs/torch\n"
         'sudo applctl kernels add py312 --python /opt/venvs/py312/bin/python --display-name "Python 3.12"')
def add(name_arg: str | None, name: str | None, prefix: str | None, python: str | None, display_name: str | None,
        as_json: bool) -> None:
    """Register a Python environment as a kernel for every user.

    PREFIX is a conda environment (its activation scripts run before the kernel)
    or a venv; its bin/python must have ipykernel and be runnable by every user.
    Running servers show the new kernel after a page reload.
    """
    if name_arg and name and name_arg != name:
        raise Failure(f"the kernel is named twice ({name_arg!r} and --name {name!r}); give NAME or --name")
    name = name_arg or name
    if not name:
        raise Failure("give the kernel a name: applctl kernels add NAME --env PREFIX")
    check_name(name)
    if bool(prefix) == bool(python):
        raise Failure("say which environment, once: --env PREFIX (a conda environment or a venv) "
                      "or --python PATH (its interpreter)")
    given = "--env" if prefix else "--python"
    path = prefix or python or ""
    if not path.startswith("/") or os.path.normpath(path) != path:
        raise Failure(f"{given} {path[:100]!r}: give the absolute path of the "
                      f"{'environment' if prefix else 'interpreter'}, without '..' or a trailing '/', "
                      f"e.g. {'/opt/conda/envs/torch' if prefix else '/opt/venvs/torch/bin/python'}")
    need_root("kernels add")
    if prefix:
        if not os.path.isdir(prefix):
            raise Failure(f"--env {prefix}: no such directory")
        python = f"{prefix}/bin/python"
        if not os.path.exists(python):
            raise Failure(f"--env {prefix} has no bin/python: give a conda environment's or a venv's directory")
    assert python is not None
    prefix = prefix or os.path.dirname(os.path.dirname(python))
    if not os.path.exists(python):
        raise Failure(f"--python {python}: no such file")
    if not os.path.isfile(python) or not os.access(python, os.X_OK):
        raise Failure(f"--python {python} is not an executable file; give the environment's bin/python")
    try:  # before anything runs it
        privilege.check_executable(python)
    except privilege.PrivilegeError as e:
        raise Failure(f"{given} {e}") from None
    existing = next((k for k in find_kernels() if k["name"] == name), None)
    if existing and existing["python"] == python and existing["source"] == "applctl":
        emit(as_json, {**existing, "changed": False}, f"kernel {name} already runs {python}; nothing changed")
        return
    if existing:
        hint = (f"; or remove it first: applctl kernels remove {name}"
                if Path(existing["location"]).parent == KERNEL_DIR else "")
        raise Failure(f"a kernel named {name} already exists ({existing['location']}, python "
                      f"{existing['python']}); choose another name{hint}")
    info = probe(python)
    kind = env_kind(Path(prefix))
    spec = kernel_spec(python, display_name or f"Python {info['version']} ({name})", info, prefix, kind)
    path = write_kernel(name, spec)
    emit(as_json, {"name": name, "display_name": spec["display_name"], "python": python, "kind": kind,
                   "python_version": info["version"], "ipykernel": info["ipykernel"], "path": str(path),
                   "changed": True},
         f"kernel {name} ({spec['display_name']}, {kind}, ipykernel {info['ipykernel']}) is now offered to every user")


@kernels.command()
@click.argument("name", shell_complete=kernel_names)
@json_option
@example("sudo applctl kernels remove py312")
def remove(name: str, as_json: bool) -> None:
    """Stop offering the kernel NAME (running kernels of it go on until shut down)."""
    check_name(name)
    need_root("kernels remove")
    target = KERNEL_DIR / name
    if not (target / "kernel.json").exists():
        elsewhere = next((k for k in find_kernels() if k["name"] == name), None)
        if elsewhere:
            raise Failure(f"kernel {name} is not one applctl manages ({elsewhere['location']}): "
                          "it belongs to the appliance's user environment or another package")
        emit(as_json, {"name": name, "changed": False}, f"there is no kernel {name}; nothing changed")
        return
    shutil.rmtree(target)
    emit(as_json, {"name": name, "changed": True}, f"kernel {name} removed")
