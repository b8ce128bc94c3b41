"""LLM inference scheduling workbench.

Data flows one way: trace -> cost model -> offline assignment -> online
scheduler -> simulator -> timeline table -> metrics and figures.  See
``MODEL.md`` (shipped as ``docs/MODEL.md``) for the contract.
"""

__version__ = "0.1.0"

from workbench.errors import WorkbenchError  # noqa: E402

__all__ = ["WorkbenchError", "__version__"]
