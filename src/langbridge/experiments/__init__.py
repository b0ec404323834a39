"""Experiments on real data: the `langbridge demo` capstone (English-only training, multilingual evaluation),
its statistics (paired bootstrap) and the FLORES-200 cross-lingual continuation score.

Submodules import torch/numpy lazily where they can, so `langbridge --help` stays fast.
"""
