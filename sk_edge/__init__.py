"""sk-edge: Selective Kernel Networks to ONNX and TensorRT for NVIDIA edge and desktop GPUs."""

__version__ = "0.1.0"
