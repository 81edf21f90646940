"""Name → class/function registries that configs select from.

One registry per kind (aggregator, fusion, loss, task, ...). A config names an
entry by string; an unknown name is a `ConfigError` that lists the known ones.
"""
from vt_keras.errors import ConfigError


class Registry:
    """A small mapping from names to objects, filled by a decorator."""

    def __init__(self, kind):
        self.kind = kind
        self._entries = {}

    def register(self, name):
        def decorator(obj):
            if name in self._entries:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._entries[name] = obj
            return obj

        return decorator

    def get(self, name, key=None):
        """Returns the entry `name`; `key` names the config key for the error."""
        if name not in self._entries:
            where = f"{key}={name!r}" if key else repr(name)
            raise ConfigError(
                f"unknown {self.kind} {where}; expected one of: {', '.join(sorted(self._entries))}"
            )
        return self._entries[name]

    def names(self):
        return sorted(self._entries)

    def __contains__(self, name):
        return name in self._entries
