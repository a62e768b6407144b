"""`python -m lstmc.cli`: the `lstmc` command line."""

from lstmc.cli import main

if __name__ == "__main__":
    main()
