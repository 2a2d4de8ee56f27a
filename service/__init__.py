"""The MindBus storage worker: a FastStream consumer that is the single writer of artifacts, threads and memory."""

__version__ = "0.1.0"
__all__ = ["__version__"]
