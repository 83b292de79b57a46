"""The one training loop for every family (trainer.py), its checkpoints and EMA."""
