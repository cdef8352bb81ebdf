"""Build the fake NVML library (tests only, never shipped).

    python tests/fake_nvml/build.py OUTDIR   # prints OUTDIR/libnvidia-ml.so.1
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

SOURCE = Path(__file__).resolve().with_name("fake_nvml.c")
SONAME = "libnvidia-ml.so.1"


def build(outdir: str | os.PathLike[str]) -> Path:
    """Compile fake_nvml.c into OUTDIR/libnvidia-ml.so.1 and return its path."""
    cc = os.environ.get("CC", "gcc")
    if shutil.which(cc) is None:
        raise FileNotFoundError(f"C compiler {cc!r} not found: needed to build the fake NVML")
    out = Path(outdir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    target = out / SONAME
    # Build beside the target, then rename: a process that already mapped the
    # old file keeps a consistent copy.
    tmp = out / f".{SONAME}.{os.getpid()}.tmp"
    cmd = [cc, "-std=gnu11", "-O2", "-Wall", "-Wextra", "-Werror", "-shared", "-fPIC",
           f"-Wl,-soname,{SONAME}", "-o", str(tmp), str(SOURCE)]
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0:
        tmp.unlink(missing_ok=True)
        raise RuntimeError(f"building the fake NVML failed:\n{' '.join(cmd)}\n{result.stderr}")
    tmp.replace(target)
    return target


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(f"usage: {sys.argv[0]} OUTDIR")
    print(build(sys.argv[1]))
