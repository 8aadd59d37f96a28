"""Backends that run a model: PyTorch (the FP32 reference) and ONNX Runtime.

Each backend is a small callable, numpy in and numpy out, built lazily, with the lifecycle of
:mod:`sk_edge.backends.runner` (``close()``, ``with runner:``).
"""
