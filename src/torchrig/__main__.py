"""`python -m torchrig` runs the same CLI as the `torchrig` console script."""

from torchrig.cli import main

if __name__ == "__main__":
    main()
