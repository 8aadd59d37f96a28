"""The one shape every runner has: ``runner(x) -> y`` on numpy arrays, and a lifecycle.

A runner may hold what outlives a call (an ONNX Runtime session, a module on a device, an engine's
GPU buffers and CUDA context): ``close()`` gives it back and is safe to call twice, and
``with runner:`` closes it whatever happens, as Polygraphy's runners do.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np


class Runner(Protocol):
    def __call__(self, x: np.ndarray) -> np.ndarray: ...

    def close(self) -> None: ...

    def __enter__(self) -> "Runner": ...

    def __exit__(self, *exc) -> None: ...


class Lifecycle:
    """``with runner: ...`` closes the runner at the end of the block."""

    def close(self) -> None:  # nothing held by default
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()
