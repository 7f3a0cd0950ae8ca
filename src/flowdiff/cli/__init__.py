"""Layer 4 (edge): the `flowdiff` command line."""
