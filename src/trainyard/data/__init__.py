"""Reading jet datasets into model inputs and batching them for training."""
