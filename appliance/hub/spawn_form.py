"""The spawn form: how many GPUs (or which profile), rendered and checked.

Pure functions, so the same check applies to a submitted form and to options sent
through the REST API. The daemon checks the quota again: this is for clear words
on the form, not for security.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from html import escape
from typing import Any, Callable

from ..gpu.allocator import QuotaError
from ..limits import Limits
from ..protocol import GpuReport


class FormError(ValueError):
    """A bad form value, worded for the user."""


@dataclass(frozen=True)
class GpuSummary:
    available: bool
    total: int
    free: int
    reason: str | None = None
    waiting: int = 0  # spawns in the GPU queue
    seats: dict[int, str] = field(default_factory=dict)  # N -> what a seat of a GPU shared N ways is

    @classmethod
    def from_daemon(cls, report: GpuReport) -> "GpuSummary":
        total = sum(g.get("seats", 1) for g in report.gpus)
        seats = {g["seats"]: seat_text(g) for g in report.gpus if g.get("seats", 1) > 1}
        return cls(report.available, total, report.free, report.reason, len(report.waiting), seats)


_PARTS = {2: "a half", 3: "a third", 4: "a quarter"}


def seat_text(g: dict) -> str:
    """'a quarter of one NVIDIA H100 80GB HBM3: 20 GB, shared compute'"""
    n = g["seats"]
    memory = g.get("seat_memory") or g["memory_total"] / n
    return f"{_PARTS.get(n, f'1/{n}')} of one {g['name']}: {memory / 2**30:.0f} GB, shared compute"


def _gpus(n: int) -> str:
    return "no GPU" if n == 0 else f"{n} GPU" if n == 1 else f"{n} GPUs"


def render(summary: GpuSummary, quota: int, profiles: dict[str, dict], queue_minutes: int | None = None,
           limits_of: Callable[[dict | None], Limits] | None = None) -> str:
    """HTML for the form, or "" when there is nothing to choose (JupyterHub then
    spawns at once). queue_minutes: how long a spawn may wait for a GPU, None
    when there is no queue. limits_of(profile or None): what the server gets."""
    limits_of = limits_of or (lambda _profile: Limits(None, None, None))
    if not profiles and (not summary.available or quota == 0):
        return ""
    waiting = (f", {summary.waiting} waiting for one" if summary.waiting else "")
    free_line = (f"<p>{summary.free} of {summary.total} GPUs free now{waiting}; your quota is {_gpus(quota)}.</p>"
                 if summary.available else "<p>This server has no usable GPU: CPU only.</p>")
    if summary.available and queue_minutes is not None:
        free_line += (f"<p>If no GPU is free, you wait in a queue, first come first served, for up to "
                      f"{queue_minutes} minutes, and see your place while you wait.</p>")
    if profiles:
        choices = []
        for i, (name, p) in enumerate(profiles.items()):
            if p.get("gpu_share"):
                devices = summary.seats.get(p["gpu_share"]) or f"1/{p['gpu_share']} of a shared GPU (none is set up)"
            elif p.get("mig"):
                devices = f"{_gpus(p['gpus'])}, each a {p['mig']} MIG slice of one (its own memory and compute)"
            else:
                devices = _gpus(p["gpus"])
            detail = f"{limits_of(p).describe()}, {devices}"
            choices.append(
                f'<div class="radio"><label><input type="radio" name="profile" value="{escape(name)}"'
                f'{" checked" if i == 0 else ""}> {escape(p["display_name"])} <small>({escape(detail)})</small>'
                "</label></div>")
        body = "".join(choices)
    else:
        options = "".join(f'<option value="{n}"{" selected" if n == min(1, quota) else ""}>{_gpus(n)}</option>'
                          for n in range(quota + 1))
        body = (f"<p>Your server: {escape(limits_of(None).describe())}, and the GPUs you choose.</p>"
                f'<label for="gpus">GPUs</label> <select class="form-control" name="gpus" id="gpus">{options}</select>')
    when = "if no GPU is free" if queue_minutes is None else f"if no GPU is free after {queue_minutes} minutes"
    fallback = ('<div class="checkbox"><label><input type="checkbox" name="cpu_fallback" value="on"> '
                f"Start CPU-only {when}</label></div>")
    return free_line + body + fallback


def parse(formdata: dict[str, list[str]], profiles: dict[str, dict]) -> dict[str, Any]:
    """Form fields (lists of strings) -> user_options; refuses anything unexpected."""
    accepted = {"profile", "cpu_fallback"} if profiles else {"gpus", "cpu_fallback"}
    formdata = {k: v for k, v in formdata.items() if k != "_xsrf"}  # JupyterHub's own, checked by it
    for key, values in formdata.items():
        if key not in accepted:
            raise FormError(f"Unexpected form field {key[:40]!r}; this form accepts: {', '.join(sorted(accepted))}.")
        if len(values) != 1:
            raise FormError(f"The form field {key} was sent {len(values)} times; send it once.")
    options: dict[str, Any] = {"cpu_fallback": formdata.get("cpu_fallback", [""])[0] == "on"}
    if profiles:
        options["profile"] = formdata.get("profile", [next(iter(profiles))])[0]
    else:
        raw = formdata.get("gpus", ["0"])[0].strip()
        if not raw.lstrip("-").isdigit():
            raise FormError(f"The number of GPUs must be a whole number, not {raw[:20]!r}.")
        options["gpus"] = int(raw)
    return options


def resolve(options: dict[str, Any], quota: int, profiles: dict[str, dict]) -> dict[str, Any]:
    """user_options (from the form or the API) -> what to ask the daemon for."""
    unknown = set(options) - {"gpus", "profile", "cpu_fallback"}
    if unknown:
        raise FormError(f"Unknown option {sorted(unknown)[0]!r}; accepted: gpus, profile, cpu_fallback.")
    fallback = options.get("cpu_fallback", False)
    if not isinstance(fallback, bool):
        raise FormError("cpu_fallback must be true or false.")
    out: dict[str, Any] = {"gpus": 0, "cpu_fallback": fallback, "profile": None}
    if "profile" in options:
        name = options["profile"]
        if not isinstance(name, str) or name not in profiles:
            names = ", ".join(profiles) or "none are configured"
            raise FormError(f"There is no profile {str(name)[:40]!r}; the profiles are: {names}.")
        out.update(gpus=profiles[name]["gpus"], profile=name)
    elif "gpus" in options:
        out["gpus"] = options["gpus"]
    # The hub's one check of a count, in the person's words; the daemon checks it
    # again for root (daemon/validate.py).
    count = out["gpus"]
    if isinstance(count, bool) or not isinstance(count, int):
        raise FormError(f"GPU count must be a whole number, not {count!r}.")
    if count < 0:
        raise FormError(f"GPU count must be 0 or more, not {count}.")
    if count > quota:
        raise FormError(str(QuotaError(count, quota)))
    return out
