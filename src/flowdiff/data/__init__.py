"""Layer 4 (edge): data sets — built-in 2-D toy sets, image sets, and users' own files."""
