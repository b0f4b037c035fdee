"""Backends turn what they observe (Slurm job states, Azure power states, processes) into
lifecycle events, and carry out commands. They never write to the database themselves."""
