"""``python -m omnifer``: the command line (what ``torchrun -m omnifer`` starts per process)."""

from omnifer.cli.main import main

if __name__ == "__main__":
    main()
