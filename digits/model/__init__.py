"""The model: architectures, training, evaluation, export, tuning, reproduction."""
