"""Training machinery shared by the stages: data, latency losses, the training loop, the
super-net search and its sweeps, weights, checkpoints and processes."""
