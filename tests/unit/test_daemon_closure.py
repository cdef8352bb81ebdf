"""The root daemon's code stays small enough to read: everything root runs in it,
counted from appliance/daemon/ through every appliance import, each module once,
in lines as `wc -l` counts them (as issue 28 counted its 2,832).

Issue 28 asked for at most 2,500, by moving out what root never runs. That is done
(config editing, the privilege checks applctl makes, the hub's and applctl's
helpers: NOT_ROOT below), and took the closure from 3,682 lines to 3,407. The rest
is what root runs itself; most of it came with issue 26 after the 2,500 was set
(the environment and option allow lists, the privileged-user verdicts, the
visitors' sandbox). LIMIT is where it stands, so that it cannot grow unnoticed.
Issue 29 raised it from 3,450 to 3,560: the checks of [auth] and [oidc] (single
sign-on) are in config.validate, which every reader of appliance.toml runs, the
daemon too (about 110 lines in the closure). Issue 27's Debian 12 -> 13 upgrade
raised it to 3,600: root's own code, the Python a server's unit runs (read from its
ExecStart for the hub) and the daemon-reload that frees a unit systemd keeps loaded
after it re-executed itself (36 lines). Issue 29's accounts = "create" raised it to
3,800: the daemon makes a single sign-on account at the first login (daemon/
accounts.py: the name rule, never taking a name over, the range cap, useradd in a
transient unit; 142 lines), the range and group checks in config (36), the
"account" op (4), and the bounds of the provider's groups a hub sends for the quota
and [limits] (20). Root must check these itself: the hub only names the person.
Single sign-on's sessions then added [oidc] refresh_age to config's schema (3 lines):
3,805. Servers' ports held by systemd raised it to 3,880: each server's socket unit
(units.socket_properties), its reset and roll-back with the server, and another port
when one was taken before systemd bound it (spawns.py, validate.move_to_port); root
must do this, since only root's systemd may bind a port for another uid's unit.
[oidc] claims_from (the ID token, signature checked) added 3 lines to config's
schema: 3,885. Issue 30's MIG devices raised it to 4,002: root reads the inventory
and grants devices, so the MIG devices' listing and their nvidia-caps minors
(gpu/inventory.py, 82 lines), the rules that tell them apart by those files
(gpu/devices.py), a profile's `mig` in config, and the kind a queue entry waits for.
Its shared GPUs raised it to 4,364: seats in the allocator and the queue, [gpu]
shared, share_memory and a profile's gpu_share in config, and the seats' memory budgets, which
only root can enforce (daemon/gpu_share.py: per-process memory through NVML, the
unit of each process from systemd, the warning in the server's journal, the kill
as the server's user; 150 lines, with journal.py). [oidc] username_domain (a UPN's
domain, checked where the other [oidc] keys are) added 11: 4,375.
Content links (issue 32 item 4) raised it by 247: a visitor's server may reach
[ephemeral] content_hosts, and only root may decide which addresses those are, so
the daemon resolves the names in a unit of its own (it has no network itself),
reads that answer strictly, allows the addresses but never cloud metadata, and pins
them in the server's /etc/hosts (content.py 116 lines, which config also checks the
key with; units.py, visitors.py, about 130): 4,622 with username_domain. `applctl link`
is not root's code.
Issue 32's web apps added 136: [apps.NAME] in config's schema (every reader
validates it; the daemon passes the apps to each server from its own reading), and
the server unit's one allowed port for an app in its own network (daemon/units.py): 4,758.
The daemon no longer starts After= root's check of sudo and polkit rights (minutes
with many members): it serves at once, and spawns wait for that run: 4,778. Which
apps listen on {port} became one function, which applctl doctor uses too: 4,783.
Issue 31's [cluster] added 157 to config's schema: the engine, the Slurm names, time
limits and the allow-list of extra sbatch options, and a profile's own partition, qos
and time limit. Root will pass them to sbatch as the person's uid, so it checks them
from its own reading: 4,945."""

from __future__ import annotations

import ast
from pathlib import Path

TOP = Path(__file__).resolve().parents[2]
LIMIT = 4945
# Modules root never runs: what applctl and the hub do with their own rights.
NOT_ROOT = ("appliance.config_edit", "appliance.privilege", "appliance.root_grants", "appliance.tools",
            "appliance.hub", "appliance.cli", "appliance.revproxy", "appliance.passwords", "appliance.state")


def _path(module: str) -> Path | None:
    p = TOP.joinpath(*module.split("."))
    for candidate in (p / "__init__.py", p.with_suffix(".py")):
        if candidate.is_file():
            return candidate
    return None


def _module(path: Path) -> str:
    return ".".join(path.relative_to(TOP).with_suffix("").parts).removesuffix(".__init__")


def imports(path: Path) -> set[str]:
    """The appliance modules `path` imports, and the packages above them (which run too)."""
    name = _module(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[:len(parts) - node.level + 1] + ([base] if base else []))
            found.add(base)
            found |= {f"{base}.{a.name}" for a in node.names}  # `from . import units` imports a module
    parents = {".".join(m.split(".")[:i]) for m in found for i in range(1, m.count(".") + 2)}
    return {m for m in parents if m.split(".")[0] == "appliance" and _path(m)}


def closure() -> dict[str, set[str]]:
    """Every module root runs in the daemon -> the appliance modules it imports."""
    graph: dict[str, set[str]] = {}
    todo = [_module(p) for p in sorted((TOP / "appliance" / "daemon").glob("*.py"))]
    while todo:
        name = todo.pop()
        if name not in graph:
            graph[name] = imports(_path(name))
            todo += graph[name]
    return graph


def test_the_root_daemon_runs_at_most_LIMIT_lines():
    sizes = {m: len(_path(m).read_text().splitlines()) for m in closure()}
    total = sum(sizes.values())
    table = "\n".join(f"{n:6} {m}" for m, n in sorted(sizes.items(), key=lambda x: -x[1]))
    assert total <= LIMIT, f"the root daemon runs {total} lines in {len(sizes)} modules, more than " \
                           f"{LIMIT}; move out what root never runs:\n{table}"


def test_the_root_daemon_imports_nothing_only_applctl_or_the_hub_runs():
    found = [m for m in closure() if any(m == n or m.startswith(n + ".") for n in NOT_ROOT)]
    assert not found, f"root's daemon imports {found}"


def test_the_daemons_modules_import_no_circle_and_units_not_the_gpu_manager():
    graph = closure()
    assert "appliance.daemon.gpus" not in graph["appliance.daemon.units"]
    done: set[str] = set()

    def visit(name: str, path: tuple[str, ...]) -> None:
        if name in path:
            raise AssertionError("import circle: " + " -> ".join(path[path.index(name):] + (name,)))
        if name not in done:
            for dep in graph[name] - {name}:
                # A package's __init__ running before its modules is not a circle.
                if not name.startswith(dep + "."):
                    visit(dep, path + (name,))
            done.add(name)

    for name in graph:
        visit(name, ())
