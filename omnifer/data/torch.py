"""``FaceDataset``: a ``LabeledSet`` as a torch ``Dataset`` of image tensors, labels and masks.

torch is imported when this module is imported, never by ``import omnifer.data``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from omnifer.data.images import load_image
from omnifer.data.table import LabeledSet
from omnifer.errors import OmniferError

#: ArcFace-style normalisation: [0, 1] -> [-1, 1].
DEFAULT_MEAN: tuple[float, float, float] = (0.5, 0.5, 0.5)
DEFAULT_STD: tuple[float, float, float] = (0.5, 0.5, 0.5)


class FaceDataset(Dataset):
    """Items are dicts: ``image`` float [3, size, size] (normalised), ``expression`` long (0
    where missing), ``expression_mask`` bool, ``va`` float [2], ``va_mask`` bool, ``au`` float
    [n_aus], ``au_mask`` bool [n_aus], ``weight`` float, ``index`` long (row in the table).

    ``transform`` (optional) maps the RGB ``PIL.Image`` to another one before resizing, e.g.
    for augmentation.
    """

    def __init__(
        self,
        labeled_set: LabeledSet,
        *,
        size: int = 112,
        mean: Sequence[float] = DEFAULT_MEAN,
        std: Sequence[float] = DEFAULT_STD,
        transform: Callable[[Any], Any] | None = None,
    ) -> None:
        if not isinstance(labeled_set, LabeledSet):
            raise OmniferError(
                f"FaceDataset needs a LabeledSet (from read_labeled); got "
                f"{type(labeled_set).__name__}"
            )
        if int(size) <= 0:
            raise OmniferError(f"image size {size} must be a positive number of pixels")
        if len(mean) != 3 or len(std) != 3 or any(float(s) <= 0 for s in std):
            raise OmniferError(
                f"mean {tuple(mean)} and std {tuple(std)} need three values each, std > 0"
            )
        self.labeled_set = labeled_set
        self.size = int(size)
        self.transform = transform
        self.images = labeled_set.table["image"].tolist()
        arrays = labeled_set.arrays()
        self._labels = {
            "expression": torch.from_numpy(arrays["expression"]),
            "expression_mask": torch.from_numpy(arrays["expression_mask"]),
            "va": torch.from_numpy(arrays["va"]),
            "va_mask": torch.from_numpy(arrays["va_mask"]),
            "au": torch.from_numpy(np.ascontiguousarray(arrays["au"])),
            "au_mask": torch.from_numpy(np.ascontiguousarray(arrays["au_mask"])),
            "weight": torch.from_numpy(arrays["weight"]),
        }
        self._mean = torch.tensor([float(m) for m in mean], dtype=torch.float32).view(3, 1, 1)
        self._std = torch.tensor([float(s) for s in std], dtype=torch.float32).view(3, 1, 1)

    def __len__(self) -> int:
        return len(self.images)

    def image_tensor(self, index: int) -> torch.Tensor:
        from PIL import Image

        im = load_image(self.images[index])
        if self.transform is not None:
            im = self.transform(im)
        if im.size != (self.size, self.size):
            im = im.resize((self.size, self.size), Image.BILINEAR)
        arr = np.asarray(im, dtype=np.uint8)
        x = torch.from_numpy(arr.copy()).permute(2, 0, 1).float().div_(255.0)
        return (x - self._mean) / self._std

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} samples")
        index = index % len(self)
        item = {"image": self.image_tensor(index)}
        for key, values in self._labels.items():
            item[key] = values[index]
        item["index"] = torch.tensor(index, dtype=torch.long)
        return item


__all__ = ["FaceDataset", "DEFAULT_MEAN", "DEFAULT_STD"]
