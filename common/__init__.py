"""Shared library of the latent-action study: configuration, dataset I/O, simulation, tracking."""
