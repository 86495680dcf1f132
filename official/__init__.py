"""AssembleNet and AssembleNet++ for TensorFlow 2 / Keras 3.

With TF's Eigen CPU kernels (oneDNN off), importing the package sets
`TF_CPU_ALLOCATOR_USE_BFC=true` unless it is already set: TF's own pooling allocator for
CPU tensors, faster there than the C library's (see `official/runtime.py`; set the
variable yourself first to choose).
"""

from official import runtime as _runtime

__version__ = "0.1.0"

_runtime.prefer_bfc_cpu_allocator()
