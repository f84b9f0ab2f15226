"""``python -m cogvid`` runs the command line."""

from cogvid.cli.app import main

if __name__ == "__main__":
    main()
