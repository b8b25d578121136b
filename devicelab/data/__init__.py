"""Built-in data shipped with the package: the default inventory and the built-in suites."""
