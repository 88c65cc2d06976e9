"""The formats of labeled databases, one module each; importing this package registers every
reader in :data:`omnifer.data.readers.READERS`."""

from omnifer.data.formats import csv, folder, hf, hub, parquet, toml  # noqa: F401 - registers

__all__ = ["csv", "folder", "hf", "hub", "parquet", "toml"]
