"""The absl main() of each binary: flags → config → library calls.

TensorFlow's default CPU allocator hands out fresh memory for every tensor;
its BFC allocator reuses it, which made batched record parsing 2–3 times
faster on CPU (bench/input_pipeline.py). It must be chosen before TensorFlow
starts, so the binaries set it here unless the user already did.
"""
import os

os.environ.setdefault("TF_CPU_ALLOCATOR_USE_BFC", "true")
