"""pytest fixtures that put the fake NVML library (tests/fake_nvml) behind pynvml.

How the fake is found: the built libnvidia-ml.so.1 is preloaded once per process
with RTLD_GLOBAL. pynvml's own loader then runs unchanged — CDLL("libnvidia-ml.so.1")
— and the dynamic linker answers that name with the already-loaded object of the same
soname (setting LD_LIBRARY_PATH at runtime would not affect dlopen). pynvml's cached
library handle and function pointers are reset around every test, so each test goes
through that loading path again. Code that needs no library at all runs in a
subprocess (see run_in_subprocess).
"""
from __future__ import annotations

import ctypes
import importlib.util
import json
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import pynvml
import pytest

from tests.ci import in_ci

REPO = Path(__file__).resolve().parents[2]
_preloaded: dict[str, ctypes.CDLL] = {}


def _load_build_module() -> Any:
    spec = importlib.util.spec_from_file_location("fake_nvml_build", REPO / "tests/fake_nvml/build.py")
    module = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    spec.loader.exec_module(module)
    return module


def reset_pynvml() -> None:
    """Forget pynvml's loaded library and cached function pointers."""
    pynvml.nvmlLib = None
    pynvml._nvmlGetFunctionPointer_cache.clear()
    pynvml._nvmlLib_refcount = 0


@dataclass
class FakeGPU:
    """One `gpu` line of the fake's configuration (see tests/fake_nvml/README.md)."""
    index: int
    minor: int | None = None
    uuid: str | None = None
    name: str = "NVIDIA A100-SXM4-80GB"
    mem_total: int = 80 * 2**30
    mem_used: int = 0
    mem_reserved: int = 0
    util_gpu: int = 0
    util_mem: int = 0
    temp: int = 35
    power: int = 60000  # milliwatts
    pci: str | None = None
    mig: str = "0"
    lost: bool = False
    procs: list[tuple[int, int]] = field(default_factory=list)
    fail: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.minor is None:
            self.minor = self.index
        if self.uuid is None:
            self.uuid = f"GPU-{self.index:08x}-1111-2222-3333-444455556666"
        if self.pci is None:
            self.pci = f"00000000:{self.index + 1:02X}:00.0"

    def line(self) -> str:
        parts = [f"gpu index={self.index} minor={self.minor} uuid={self.uuid}",
                 f"name={self.name.replace(' ', '_')}",
                 f"mem_total={self.mem_total} mem_used={self.mem_used} mem_reserved={self.mem_reserved}",
                 f"util_gpu={self.util_gpu} util_mem={self.util_mem} temp={self.temp} power={self.power}",
                 f"pci={self.pci}",
                 f"mig={self.mig} lost={int(self.lost)}"]
        if self.procs:
            parts.append("procs=" + ",".join(f"{pid}:{mem}" for pid, mem in self.procs))
        if self.fail:
            parts.append("fail=" + ",".join(self.fail))
        return " ".join(parts)


@dataclass
class FakeMig:
    """One `mig` line: a MIG device of the GPU at position `gpu` (which needs mig="1")."""
    gpu: int
    gi: int
    ci: int = 0
    profile: str = "1g.10gb"
    uuid: str | None = None
    mem_total: int = 10 * 2**30
    mem_used: int = 0
    util_gpu: int | None = None  # None: not reported, as drivers do for MIG devices

    def line(self) -> str:
        uuid = self.uuid or f"MIG-{self.gpu:04x}{self.gi:04x}-0000-0000-0000-{self.ci:012x}"
        return (f"mig gpu={self.gpu} gi={self.gi} ci={self.ci} profile={self.profile} uuid={uuid} "
                f"mem_total={self.mem_total} mem_used={self.mem_used}"
                + ("" if self.util_gpu is None else f" util_gpu={self.util_gpu}"))


class FakeNvml:
    def __init__(self, library: Path, config: Path, handle: ctypes.CDLL) -> None:
        self.library, self.config, self._handle = library, config, handle

    def write(self, gpus: list[FakeGPU], driver: str = "550.54.14", init_error: int | None = None,
              migs: list[FakeMig] = ()) -> None:
        lines = [f"driver {driver}"]
        if init_error is not None:
            lines.append(f"init_error={init_error}")
        lines += [g.line() for g in gpus] + [m.line() for m in migs]
        # write-then-rename: the library may re-read the file at any moment
        tmp = self.config.with_suffix(".tmp")
        tmp.write_text("\n".join(lines) + "\n")
        tmp.replace(self.config)

    def init_count(self) -> int:
        """nvmlInit calls not yet matched by nvmlShutdown."""
        return self._handle.fake_nvml_init_count()


@pytest.fixture(scope="session")
def fake_nvml_library(tmp_path_factory: pytest.TempPathFactory) -> Path:
    try:
        return _load_build_module().build(tmp_path_factory.mktemp("fake_nvml"))
    except FileNotFoundError as e:
        if in_ci():
            raise  # CI installs gcc: a missing compiler there is a broken CI, not a skip
        pytest.skip(f"cannot build the fake NVML: {e}")


@pytest.fixture
def fake_nvml(fake_nvml_library: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeNvml]:
    """pynvml talks to the fake library, configured by FakeNvml.write()."""
    handle = _preloaded.get("lib")
    if handle is None:
        handle = _preloaded["lib"] = ctypes.CDLL(str(fake_nvml_library), mode=ctypes.RTLD_GLOBAL)
    config = tmp_path / "fake_nvml.conf"
    monkeypatch.setenv("FAKE_NVML_CONFIG", str(config))  # os.environ also calls putenv
    reset_pynvml()
    yield FakeNvml(fake_nvml_library, config, handle)
    reset_pynvml()


def run_in_subprocess(code: str, env: dict[str, str]) -> Any:
    """Run `code` (which prints one JSON value) in a fresh interpreter, so the dynamic
    linker searches for libnvidia-ml.so.1 from scratch with this environment."""
    full_env = {k: v for k, v in os.environ.items() if k not in ("LD_LIBRARY_PATH", "LD_PRELOAD")}
    full_env.update(env)
    full_env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), full_env.get("PYTHONPATH")]))
    result = subprocess.run([sys.executable, "-c", code], env=full_env, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)
