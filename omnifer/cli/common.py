"""What every command shares: the workspace, JSON output and progress bars."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from omnifer.artifacts import to_jsonable
from omnifer.workspace import Workspace


@dataclass
class Context:
    workspace_root: str | None
    as_json: bool
    quiet: bool

    @property
    def workspace(self) -> Workspace:
        return Workspace(self.workspace_root)

    def emit(self, result: Any, text: str) -> None:
        """Print ``text`` for people, or ``result`` as JSON with ``--json``."""
        if self.as_json:
            click.echo(json.dumps(to_jsonable(result), indent=2, sort_keys=True))
        else:
            click.echo(text)

    @contextmanager
    def progress(self, desc: str, unit: str = "it") -> Iterator[Callable[[int, int], None]]:
        """A progress bar on stderr driven by a ``callback(done, total)``."""
        from tqdm import tqdm

        bar = tqdm(desc=desc, unit=unit, file=sys.stderr, disable=self.quiet or None,
                   dynamic_ncols=True, smoothing=0.1)

        def update(done: int, total: int) -> None:
            if bar.total != total:
                bar.total = total
            bar.update(done - bar.n)

        try:
            yield update
        finally:
            bar.close()


def embed_images(ctx: Context, ws: Any, data: Any, model: Path, device: str, what: str) -> Any:
    """The model's embeddings of a labeled set's images (cached per model and image list)."""
    import numpy as np

    from omnifer.artifacts import atomic_path, fingerprint, path_fingerprint
    from omnifer.cli.train import cache_dir
    from omnifer.models import read_model_config
    from omnifer.pools.embed import Embedder
    from omnifer.train import decoded_images
    from omnifer.train.images import cache_key

    size = read_model_config(model).input_size
    key = fingerprint({"model": path_fingerprint(model / "model.safetensors"),
                       "images": cache_key(data, size)})
    path = ws.runs_dir.parent / "cache" / "embeddings" / f"{key}.npy"
    if path.is_file():
        return np.load(path)
    with ctx.progress(what, unit="img") as bar:
        images = decoded_images(data, size, cache_dir(ws), progress=bar)
    embedder = Embedder(model, device=device, batch_size=64)
    emb = np.concatenate([embedder(images[i:i + 1024]) for i in range(0, len(images), 1024)]
                         or [np.zeros((0, embedder.dim), np.float16)])
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.save(fh, emb)
    return emb


pass_ctx = click.make_pass_decorator(Context)
