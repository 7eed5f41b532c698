"""Value classes without :mod:`dataclasses`.

Every task's own process imports the workload model and the options, and
importing ``dataclasses`` (it imports ``inspect``) and generating the classes'
methods cost that process some 14 ms, a third of a light task here.
"""
from __future__ import annotations


class Value:
    """Compared and shown by its attributes, the ones ``__init__`` sets."""

    def __eq__(self, other):
        return type(other) is type(self) and vars(other) == vars(self)

    def __repr__(self) -> str:
        fields = ", ".join(f"{name}={value!r}" for name, value in vars(self).items())
        return f"{type(self).__name__}({fields})"

    def replace(self, **changes):
        """A copy with ``changes``; the class's ``__init__`` takes every attribute by name."""
        return type(self)(**{**vars(self), **changes})


class Frozen(Value):
    """A :class:`Value` whose attributes cannot change once ``__init__`` has set them."""

    def __setattr__(self, name, value):
        if name in vars(self):
            raise AttributeError(f"cannot assign to {type(self).__name__}.{name}: it is frozen")
        super().__setattr__(name, value)

    def __hash__(self):
        return hash((type(self), *vars(self).values()))
