"""Layer 4 (edge): plots, figures and HTML reports."""
