"""Measuring on the machine this runs on: runtimes, the timing harness, energy counters, the profiler, validation.

``autocompress.hardware`` prices candidates from tables; this package builds and
times real models and layers to make and check those tables. Runtimes are
looked up by name: ``create_runtime("onnxruntime", threads=1)``.
``onnx_accuracy(path, batches)`` scores an exported ONNX file in ONNX Runtime.
"""

from autocompress.runtime.artifact import onnx_accuracy
from autocompress.runtime.base import (
    Runtime,
    UnknownRuntimeError,
    create_runtime,
    is_registered,
    register_runtime,
    runtime_names,
)

__all__ = ["Runtime", "UnknownRuntimeError", "create_runtime", "is_registered", "onnx_accuracy", "register_runtime",
           "runtime_names"]
