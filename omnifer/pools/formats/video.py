"""The ``video`` pool source: frames of video files sampled at a fixed rate (needs PyAV)."""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from omnifer.errors import OmniferError, one_line
from omnifer.pools.source import (
    VIDEO_EXTENSIONS,
    PoolItem,
    PoolSource,
    Scan,
    files_of,
    register_pool_source,
    runs,
    split_key,
)

#: Reading video decodes forward across smaller gaps between requested frames, and seeks across
#: larger ones.
SEEK_GAP_MS = 5000


def import_av() -> Any:
    """The ``av`` module, or a one-line error saying how to install it."""
    try:
        import av
    except ImportError:
        raise OmniferError("reading video needs PyAV, which is not installed; install the video "
                           "extra: pip install 'omnifer[video]'") from None
    return av


def video_duration(path: Path) -> float:
    """Seconds from the first frame to the end of the first video stream."""
    av = import_av()
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise OmniferError(f"{path} has no video stream; remove it from the pool")
            stream = container.streams.video[0]
            if stream.duration and stream.time_base:
                return float(stream.duration * stream.time_base)
            if container.duration:
                return container.duration / av.time_base
            start, last = None, 0.0
            for frame in container.decode(stream):
                if frame.time is not None:
                    start = frame.time if start is None else start
                    last = frame.time - start
            rate = float(stream.average_rate or 25)
            return last + 1.0 / rate if start is not None else 0.0
    except OmniferError:
        raise
    except Exception as exc:  # av.error.FFmpegError and friends
        raise OmniferError(f"cannot open video {path} ({one_line(exc)}); check the file or "
                           "remove it from the pool") from None


@register_pool_source("video")
class VideoSource(PoolSource):
    """Frames of videos sampled at ``fps``; keys ``<file>@<milliseconds>``, RGB uint8 arrays."""

    rule = f"a video file ({' '.join(VIDEO_EXTENSIONS)}), or a folder of them"
    defaults = {"fps": 1.0}

    @classmethod
    def matches(cls, path: Path, scan: Scan) -> bool:
        return scan.has(VIDEO_EXTENSIONS)

    def _open(self) -> None:
        fps = self.options["fps"]
        try:
            ok = not isinstance(fps, bool) and 0 < float(fps) <= 1000
        except (TypeError, ValueError):
            ok = False
        if not ok:
            raise OmniferError(f"fps={fps!r} for the video source is not a frame rate; give a "
                               "number of frames per second between 0 and 1000, e.g. fps=1")
        self.options["fps"] = float(fps)
        self._files = files_of(self.path, VIDEO_EXTENSIONS, "video")
        import_av()

    def _list(self) -> list[str]:
        fps = self.options["fps"]
        keys: list[str] = []
        for name, path in self._files.items():
            count = max(1, math.ceil(video_duration(path) * fps - 1e-6))
            keys += [f"{name}@{round(k * 1000 / fps)}" for k in range(count)]
        return keys

    def read(self, keys: Sequence[str]) -> Iterator[PoolItem]:
        def joins(a: tuple[str, int], b: tuple[str, int]) -> bool:
            return a[0] == b[0] and 0 <= b[1] - a[1] <= SEEK_GAP_MS

        for run_keys, locs in runs(keys, lambda k: split_key(k, "@", self._files), joins):
            if isinstance(locs, str):
                yield PoolItem(run_keys[0], None, locs)
            else:
                yield from self._decode_run(locs[0][0], run_keys, [loc[1] for loc in locs])

    def _decode_run(self, name: str, keys: list[str], times_ms: list[int]) -> Iterator[PoolItem]:
        """Seek before the first time, decode forward, hand out the frame shown at each time."""
        av = import_av()
        done = 0
        try:
            with av.open(str(self._files[name])) as container:
                stream = container.streams.video[0]
                base = stream.time_base
                start = float(stream.start_time * base) if stream.start_time is not None else 0.0
                container.seek(int((start + times_ms[0] / 1000) / base), stream=stream,
                               backward=True)
                shown = None
                for frame in container.decode(stream):
                    t = (frame.time - start) * 1000 if frame.time is not None else math.inf
                    while done < len(keys) and t > times_ms[done] + 0.5:
                        pick = frame if shown is None else shown
                        yield PoolItem(keys[done], pick.to_ndarray(format="rgb24"))
                        done += 1
                    if done == len(keys):
                        return
                    shown = frame
                if shown is None:
                    raise OmniferError("no frame decoded after seeking")
                for key in keys[done:]:
                    yield PoolItem(key, shown.to_ndarray(format="rgb24"))
                    done += 1
        except Exception as exc:  # av.error.FFmpegError and friends: a damaged stream
            reason = f"cannot decode {name} at {times_ms[done]} ms ({one_line(exc)})"
            yield from (PoolItem(k, None, reason) for k in keys[done:])
