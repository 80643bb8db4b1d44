"""Hardware-aware differentiable architecture search (FBNet-style): benchmark, search, export."""

__version__ = "0.1.0"
