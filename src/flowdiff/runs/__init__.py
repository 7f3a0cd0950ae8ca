"""Layer 4 (edge): run directories — config, metrics, checkpoints, resume, `load`.

Below the command line and above `learning/`: the training loop knows no files; the
`RunDirectory` hook records it here, and `load` turns a directory back into a model.
"""
