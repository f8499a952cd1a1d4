"""What every task shares: the Task contract and training loop, checkpoints, inference helpers, optimizers, the model base."""
