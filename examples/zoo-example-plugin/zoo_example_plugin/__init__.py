"""An example zoo task plugin (see checkerboard.py); zoo finds it through the `zoo.tasks` entry point."""
