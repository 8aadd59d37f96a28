"""One measurement in a Python process of its own (bench's rows, the camera path).

Its peak memory is then its own, and one backend's allocations or threads never slow the next. The
parent passes a JSON spec on the command line (``python -m MODULE --worker SPEC``); the worker prints
one marked line of JSON; anything else it prints (a library's chatter) is ignored.
"""

from __future__ import annotations

import json
import subprocess
import sys

_MARK = "SKEDGE-RESULT "


def run_worker(module: str, spec: dict) -> dict:
    """The result ``module``'s worker printed for ``spec``, or ``{"error": the last line of its stderr}``."""
    proc = subprocess.run([sys.executable, "-m", module, "--worker", json.dumps(spec)], capture_output=True, text=True)
    line = next((out for out in proc.stdout.splitlines() if out.startswith(_MARK)), None)
    if proc.returncode != 0 or line is None:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return {"error": tail[:300]}
    return json.loads(line[len(_MARK) :])


def report(result: dict) -> None:
    """What a worker hands back: its one marked line."""
    print(_MARK + json.dumps(result))


def worker_spec(argv: list[str]) -> dict | None:
    """The spec when this process was started as a worker (``--worker SPEC``), else None."""
    return json.loads(argv[2]) if len(argv) > 2 and argv[1] == "--worker" else None
