"""Training: the loop, mesh and partitioning, optimizer, orbax checkpointing, metrics."""
