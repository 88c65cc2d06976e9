"""omnifer: omni-supervised facial-expression recognition datasets.

Importing the package is cheap: heavy libraries (torch, faiss, datasets) load inside the
functions that need them.
"""

__version__ = "0.1.0"

from omnifer.errors import OmniferError  # noqa: E402

__all__ = ["__version__", "OmniferError"]
