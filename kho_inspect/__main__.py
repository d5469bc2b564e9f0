"""``python -m kho_inspect`` runs the command line interface."""

from kho_inspect.cli import main

if __name__ == "__main__":
    main()
