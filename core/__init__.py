"""The foundation every other package stands on: errors, atomic files, registries, typed
configs, plugins and workspace paths. It imports nothing of this project."""

__version__ = "0.1.0"
