"""The verbs of `python -m zoo`, one module each; `zoo.cli.VERBS` is the table from verb to function."""
