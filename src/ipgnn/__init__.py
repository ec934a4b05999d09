"""ipgnn: intention propagation for cooperative multi-agent RL on PyTorch Geometric."""

__version__ = "0.1.0"
