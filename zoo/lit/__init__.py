"""Lightning layer: the module, the data module and callbacks. Only this package (and the CLI) imports Lightning."""
