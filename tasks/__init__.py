"""Built-in task plugins and the procedural world they draw from (`tasks.world`).

Plugins are named in YAML by `class_path` (e.g. `tasks.text_to_image.TextToImage`); nothing is imported here so
importing one plugin never pulls in the others.
"""
