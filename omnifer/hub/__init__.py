"""Publishing to the Hugging Face Hub and reading Hub datasets back.

:mod:`.config` (``PublishConfig``), :mod:`.layout` (a sample table as Hub-layout Parquet
shards with images embedded and ``datasets`` features), :mod:`.card` (the dataset card),
:mod:`.upload` (``huggingface_hub`` upload, card last), :mod:`.read` (published folders and
``hf://datasets/ORG/NAME`` repos as local folders). ``import omnifer.hub`` imports neither
``datasets`` nor ``huggingface_hub``.
"""

from omnifer.hub.config import PublishConfig, check_repo_id, parse_size

__all__ = ["PublishConfig", "check_repo_id", "parse_size"]
