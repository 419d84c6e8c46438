"""The deterministic simulator: a whole ensemble in one process, one seed per run (see
world.py, and `fastzk sim`)."""
