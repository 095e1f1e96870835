"""trainlab.data — datasets, splits, normalization, augmentation and mini-batches.

``load(name, **options)`` returns a ``Dataset`` of float32 features and int64 labels;
``DATASETS`` is the registry of every name and its options. Loaders refuse truncated,
corrupted or tampered files with a ``DatasetError`` naming the file and the problem, and
read no more than ``limits`` allows (sizes a file declares are checked before allocating).
The rest follows the lectures' recipe: ``split`` into train/validation/test,
``Normalizer`` fitted on the training split only, train-time augmentation, and
``Batches`` reshuffled every epoch, resumable mid-epoch.
"""

from . import limits
from ._errors import DatasetError
from .augment import (
    ColorJitter,
    Compose,
    GaussianNoise,
    HorizontalFlip,
    Noise1d,
    RandomResizedCrop,
    Rotate,
    Scale1d,
    Shift1d,
    Translate,
    VerticalFlip,
)
from .batches import Batches, EpochSampler, loader
from .datasets import DATASETS, Dataset, load
from .idx import read_idx
from .normalize import Normalizer
from .splits import Splits, carve_validation, split

__all__ = [
    "DATASETS",
    "Batches",
    "ColorJitter",
    "Compose",
    "Dataset",
    "DatasetError",
    "EpochSampler",
    "GaussianNoise",
    "HorizontalFlip",
    "Noise1d",
    "Normalizer",
    "RandomResizedCrop",
    "Rotate",
    "Scale1d",
    "Shift1d",
    "Splits",
    "Translate",
    "VerticalFlip",
    "carve_validation",
    "limits",
    "load",
    "loader",
    "read_idx",
    "split",
]
