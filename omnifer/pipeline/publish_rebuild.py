"""``rebuild``: a references-only published set (``publish --as-references``) back into one
with the images embedded, read from the user's own copy of its pool. A row whose pool image no
longer hashes to its ``sample_id`` is dropped and counted."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from omnifer.errors import OmniferError
from omnifer.pipeline.progress import Progress, bar


def rebuild(references: Any, *, pool: Any, to_dir: Any, source: str | None = None,
            progress: Progress | None = None) -> dict[str, Any]:
    """Write ``to_dir``: the folder ``references`` with every row's image from ``pool``
    (``source``: the pool source, default the one the set records). Returns the counts."""
    import pyarrow.parquet as pq
    from datasets import Dataset, Features, Image

    from omnifer.artifacts import content_id
    from omnifer.pools import open_pool

    folder, out = Path(references), Path(to_dir)
    files = sorted((folder / "data").glob("*.parquet"))
    if not files:
        raise OmniferError(f"{folder} has no data/*.parquet; pass the folder of a set published "
                           "with --as-references")
    if out.exists() and any(out.iterdir()):
        raise OmniferError(f"--to-dir {out} is not empty; give a new or empty folder")
    tables = [pq.read_table(f) for f in files]
    if any({"key", "sample_id", "pool_source"} - set(t.column_names) for t in tables):
        raise OmniferError(f"{folder} is not a references set (no key / sample_id / pool_source "
                           "columns); it can be read as it is")
    src = open_pool(pool, source or tables[0]["pool_source"][0].as_py())
    (out / "data").mkdir(parents=True, exist_ok=True)
    kept = dropped = 0
    with bar(progress, "rebuilding images", "img") as update:
        for f, table in zip(files, tables):
            rows = table.to_pydict()
            items = {it.key: it.data for it in src.read(list(dict.fromkeys(rows["key"])))}
            good = [i for i, (k, sid) in enumerate(zip(rows["key"], rows["sample_id"]))
                    if isinstance(items.get(k), bytes) and content_id(items[k]) == sid]
            part = {"image": [{"bytes": items[rows["key"][i]], "path": rows["key"][i]}
                              for i in good],
                    **{c: [v[i] for i in good] for c, v in rows.items()}}
            features = Features({"image": Image(), **Features.from_arrow_schema(table.schema)})
            pq.write_table(Dataset.from_dict(part, features=features).data.table,
                           str(out / "data" / f.name))
            kept, dropped = kept + len(good), dropped + table.num_rows - len(good)
            update(kept + dropped, sum(t.num_rows for t in tables))
    if (folder / "README.md").is_file():
        shutil.copyfile(folder / "README.md", out / "README.md")
    return {"rows": kept, "dropped": dropped, "folder": out}
