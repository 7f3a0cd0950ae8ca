"""Layer 2: noise schedules, Gaussian probability paths and couplings."""
