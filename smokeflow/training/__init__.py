"""Trainers for the VQVAE and the flow model, checkpoint io, distributed launch, loggers."""
