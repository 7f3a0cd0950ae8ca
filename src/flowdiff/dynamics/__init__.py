"""Layer 1: equations, solvers, time grids, Brownian motion, processes and densities."""
