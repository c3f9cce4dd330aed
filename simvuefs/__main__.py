"""Allow ``python -m simvuefs``."""

from simvuefs.cli import main

if __name__ == "__main__":
    main()
