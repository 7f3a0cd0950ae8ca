"""`python -m flowdiff` runs the command line."""

from flowdiff.cli.app import main

if __name__ == "__main__":
    main()
