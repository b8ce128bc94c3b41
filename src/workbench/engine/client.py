"""The old path of the engine's replica state: ``ClientState`` is :class:`workbench.engine.replica.Replica`."""

from workbench.engine.replica import ClientState, Replica  # noqa: F401
