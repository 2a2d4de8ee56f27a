"""The MindBus storage worker: a FastStream consumer that is the single writer of artifacts, threads and memory."""

__version__ = "0.1.0"
"""The one place the version is written: pyproject.toml reads it (``[tool.setuptools.dynamic]``)."""
__all__ = ["__version__"]
