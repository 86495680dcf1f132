"""AssembleNet and AssembleNet++ for TensorFlow 2 / Keras 3.

Importing the package has no side effects on TensorFlow: the process settings its commands
choose (TF's CPU allocator, thread counts) are in `official/runtime.py`.
"""

__version__ = "0.1.0"
