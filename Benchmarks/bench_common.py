"""Helpers shared by the Benchmarks/*_bench.py drivers: the generated gRPC stubs, the machine's
CPU use, optional JSON inputs and the marked section of RESULTS.md each driver owns.

Import it from a driver in this folder (`import bench_common`; Python puts the script's folder on
sys.path). Standard library only, so every driver's Python can import it.
"""
from __future__ import annotations

import importlib
import json
import os
import sys
import time


def load_stubs(path: str, *modules: str) -> tuple:
    """The alignd.v1 stub modules named (e.g. "inference_pb2"), from the folder the run script
    generated them into with grpc_tools (Schemas/alignd/v1 is never compiled into the repo)."""
    if path not in sys.path:
        sys.path.insert(0, path)
    return tuple(importlib.import_module(f"alignd.v1.{m}") for m in modules)


def cpu_busy(seconds: float = 3.0) -> float:
    """Machine CPU use (fraction of all cores busy, 2 decimals) over `seconds`, from /proc/stat."""
    def stat() -> list[int]:
        with open("/proc/stat") as f:
            return list(map(int, f.readline().split()[1:9]))
    a = stat(); time.sleep(seconds); b = stat()
    d = [y - x for x, y in zip(a, b)]
    return round(1 - (d[3] + d[4]) / max(sum(d), 1), 2)


def wait_quiet(quiet_max: float, timeout: float) -> dict:
    """Waits until CPU use < quiet_max (at most `timeout` s); returns the state measured last."""
    start = time.monotonic()
    while True:
        busy = cpu_busy()
        waited = time.monotonic() - start
        if busy < quiet_max or waited >= timeout:
            return {"cpu_busy": busy, "loadavg": [round(x, 2) for x in os.getloadavg()],
                    "waited_s": round(waited), "quiet": busy < quiet_max}
        time.sleep(2)


def optional_json(path: str | None):
    """The JSON in `path`, or None when no path was given or the file is missing (a step that
    did not run or failed before writing its output)."""
    if not path or not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def write_section(path: str, section: str, start: str, end: str, after: str | None = None) -> None:
    """Writes `section` (which begins with `start` and ends with `end`) into the Markdown file at
    `path`: in place of the text between the markers if both are there, else right after the
    marker `after` if given and present, else at the end. The rest of the file is kept."""
    text = open(path).read() if os.path.exists(path) else ""
    if start in text and end in text:
        pre, rest = text.split(start, 1)
        _, post = rest.split(end, 1)
        text = pre + section.rstrip("\n") + post
    elif after is not None and after in text:
        pre, post = text.split(after, 1)
        text = pre + after + "\n\n" + section.rstrip("\n") + post
    else:
        text = text.rstrip("\n") + ("\n\n" if text else "") + section
    with open(path, "w") as f:
        f.write(text)
