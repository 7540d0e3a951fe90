"""Real data sets for the CNN experiments (Table 2): loaders, subsets, spike encodings.

    data_dir = find_data_dir(None)              # --data, $REFSNN_DATA, or ../shared/data
    split = load_split("mnist", "train", data_dir=data_dir, time_steps=30)
    x = encode_batch(split, indices, time_steps=30, encoding="direct")   # (T, B, C, H, W) float64

What is read, and how (``../shared/data/README.md`` describes the files):

- MNIST: the four original IDX files, gzip-compressed (``mnist/train-images-idx3-ubyte.gz`` ...).
  The header is checked: magic 0x00000803 (uint8, 3 dims) for images and 0x00000801 (uint8,
  1 dim) for labels, 28 x 28 images, 60,000 / 10,000 of them, as many labels as images.
- N-MNIST (Orchard et al. 2015): ``nmnist-small/N.bs2``, one recording per file, 5 bytes per
  event, big-endian 40-bit words: x = bits 39-32, y = bits 31-24, polarity = bit 23,
  timestamp = bits 22-0 in microseconds. ``train1K.txt`` / ``test100.txt`` list "sample class".
  Binning (``bin_events``): a FIXED window [0, window_us) with window_us = 300,000 us (the three
  saccades of a recording; 0.25 % of the events of the shared subset lie beyond it and are
  dropped), split into T equal bins; frame[t, p, y, x] = 1 if the pixel emitted at least one
  event of polarity p in bin t (binary frames, as the TSSL-BP loader makes them), or the number
  of such events with ``binary=False``. Channel p is the polarity bit (0 or 1); rows are y,
  columns x. A fixed window, not each recording's own duration, so that a frame always covers
  the same 300 / T ms of the saccade cycle.
- CIFAR-10: ``cifar10-jpeg/cifar10_jpeg_q75.npz`` (x_train, y_train, x_test, y_test, classes):
  a JPEG-compressed copy (quality about 75, mean absolute pixel error about 6/255), only the first
  1,000 training images of each class. Any accuracy measured on it must say so: it is NOT the
  lossless benchmark (``CIFAR10_NOTE``).

Images stay uint8 in memory (N, C, H, W) until a batch is encoded; N-MNIST frames are uint8
(N, T, 2, 34, 34). Encodings (``ENCODINGS``), all time-major (T, B, C, H, W) float64:
``direct`` (pixel / 255 repeated at every step: the TSSL-BP "direct encoding"), ``standardized``
(the same with each channel shifted and scaled to mean 0 and standard deviation 1 over the shared
training split, ``CHANNEL_STATS``: signed input currents, as torchvision's Normalize gives),
``bernoulli`` (S_t ~ Bernoulli(pixel / 255), independent over t, from a given seed), ``events``
(the binned N-MNIST frames).

This module never invents data: a missing file is a ``RefsnnError`` that names the folder, the
files expected there and where to obtain them; nothing is ever copied into the repository.
"""

from __future__ import annotations

import gzip
import os
import struct
from functools import lru_cache
from pathlib import Path
from typing import NamedTuple, Sequence

import numpy as np

from .errors import RefsnnError, check_choice

DATASETS = ("mnist", "nmnist", "cifar10")
SPLITS = ("train", "test")
ENCODINGS = ("direct", "standardized", "bernoulli", "events")
#: per-channel mean and standard deviation of pixel / 255 over the shared training splits (all
#: 60,000 MNIST images; the 10,000 JPEG q75 CIFAR-10 images), for the "standardized" encoding;
#: tests/test_data.py recomputes them from the files
CHANNEL_STATS = {"mnist": ((0.130660,), (0.308108,)),
                 "cifar10": ((0.493403, 0.483115, 0.447049), (0.246036, 0.244056, 0.261567))}
DATA_ENV = "REFSNN_DATA"
REPO_ROOT = Path(__file__).resolve().parents[1]

NMNIST_SIZE = 34
NMNIST_WINDOW_US = 300_000
CIFAR10_NOTE = ("CIFAR-10 here is a JPEG-compressed copy (quality ~75, mean absolute pixel error ~6/255), "
                "1,000 training images per class: not the lossless benchmark")

#: What each data set needs in the data directory, and where to obtain it.
SOURCES = {
    "mnist": {
        "folder": "mnist",
        "files": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
                  "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
        "obtain": "the four original gzip-compressed IDX files of MNIST (LeCun, Cortes, Burges; CC BY-SA 3.0), "
                  "e.g. from https://ossci-datasets.s3.amazonaws.com/mnist/ or http://yann.lecun.com/exdb/mnist/",
    },
    "nmnist": {
        "folder": "nmnist-small",
        "files": ("train1K.txt", "test100.txt", "N.bs2 for every sample N listed in them"),
        "obtain": "N-MNIST recordings (Orchard et al. 2015; CC BY-SA 4.0) in the original 40-bit event format "
                  "from https://www.garrickorchard.com/datasets/n-mnist (Train/ and Test/ folders of .bin files, "
                  "same format), renamed N.bs2 with N the MNIST index (1..60000 train, 60001..70000 test), "
                  "plus the lists train1K.txt / test100.txt of 'sample class' lines",
    },
    "cifar10": {
        "folder": "cifar10-jpeg",
        "files": ("cifar10_jpeg_q75.npz",),
        "obtain": "an .npz with x_train uint8 (N, 32, 32, 3), y_train uint8 (N,), x_test, y_test, classes, "
                  "built from CIFAR-10 (https://www.cs.toronto.edu/~kriz/cifar.html; the shared copy holds the "
                  "first 1,000 training images of each class and the whole test set, decoded from JPEG q75)",
    },
}


# ----------------------------------------------------------------------------- the data directory

def _default_candidates() -> list[Path]:
    """../shared/data beside the current directory, then beside the repository root."""
    candidates = [Path.cwd() / ".." / "shared" / "data", REPO_ROOT / ".." / "shared" / "data"]
    unique: list[Path] = []
    for path in candidates:
        if path.resolve() not in [p.resolve() for p in unique]:
            unique.append(path)
    return unique


def _missing_message(what: str, dataset: str | None = None) -> str:
    names = [dataset] if dataset else list(DATASETS)
    lines = []
    for name in names:
        source = SOURCES[name]
        lines.append(f"{source['folder']}/ with {', '.join(source['files'])} ({source['obtain']})")
    return (f"{what}. Give the data directory with --data DIR or the environment variable {DATA_ENV}, "
            f"or place it at ../shared/data beside the repository; it must hold " + "; ".join(lines)
            + ". See ../shared/data/README.md where available. refsnn never substitutes fake data.")


def find_data_dir(data_dir: str | os.PathLike | None = None, dataset: str | None = None) -> Path:
    """The data directory: ``data_dir`` if given, else $REFSNN_DATA, else ../shared/data when it exists.

    ``dataset`` only narrows the error message to the files that data set needs.
    """
    if data_dir is not None or os.environ.get(DATA_ENV):
        given = Path(data_dir if data_dir is not None else os.environ[DATA_ENV])
        source = "--data" if data_dir is not None else f"${DATA_ENV}"
        if not given.is_dir():
            raise RefsnnError(_missing_message(f"data directory {str(given)!r} (from {source}) does not exist",
                                               dataset))
        return given
    for candidate in _default_candidates():
        if candidate.is_dir():
            return candidate
    tried = " and ".join(repr(str(p.resolve())) for p in _default_candidates())
    raise RefsnnError(_missing_message(f"no data directory: none given and {tried} do not exist", dataset))


def dataset_path(dataset: str, name: str, data_dir: str | os.PathLike | None = None) -> Path:
    """The path of file ``name`` of ``dataset``; a RefsnnError saying what to put where if missing."""
    check_choice("dataset", dataset, DATASETS)
    folder = find_data_dir(data_dir, dataset) / SOURCES[dataset]["folder"]
    path = folder / name
    if not path.is_file():
        raise RefsnnError(_missing_message(f"{dataset}: file {str(path)!r} is missing", dataset))
    return path


# ----------------------------------------------------------------------------- MNIST (IDX)

IDX_UBYTE = 0x08
MNIST_COUNTS = {"train": 60_000, "test": 10_000}
MNIST_FILES = {"train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
               "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")}


def read_idx(path: str | os.PathLike, ndim: int) -> np.ndarray:
    """A gzip-compressed IDX file of uint8 data with ``ndim`` dimensions -> its array.

    Header: 2 zero bytes, the type byte (0x08: uint8), the number of dims, then each dim as a
    big-endian uint32 (so magic 0x00000803 for images, 0x00000801 for labels).
    """
    try:
        with gzip.open(path, "rb") as handle:
            raw = handle.read()
    except (OSError, EOFError) as exc:
        raise RefsnnError(f"cannot read {str(path)!r} as a gzip-compressed IDX file: {exc}") from None
    if len(raw) < 4:
        raise RefsnnError(f"{str(path)!r} is too short for an IDX header ({len(raw)} bytes)")
    zero, kind, dims = struct.unpack(">HBB", raw[:4])
    magic = (kind << 8) | dims
    expected = (IDX_UBYTE << 8) | ndim
    if zero != 0 or magic != expected:
        raise RefsnnError(f"{str(path)!r}: IDX magic number 0x{(zero << 16) | magic:08x}, expected 0x{expected:08x} "
                          f"(uint8 data in {ndim} dimension{'s' if ndim > 1 else ''})")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise RefsnnError(f"{str(path)!r}: truncated IDX header")
    shape = struct.unpack(f">{ndim}I", raw[4:header])
    size = int(np.prod(shape))
    if len(raw) != header + size:
        raise RefsnnError(f"{str(path)!r}: IDX header says shape {shape} ({size} bytes of data), "
                          f"the file holds {len(raw) - header}")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)


@lru_cache(maxsize=4)
def _load_mnist(split: str, data_dir: str) -> tuple[np.ndarray, np.ndarray]:
    images_name, labels_name = MNIST_FILES[split]
    images = read_idx(dataset_path("mnist", images_name, data_dir), 3)
    labels = read_idx(dataset_path("mnist", labels_name, data_dir), 1)
    count = MNIST_COUNTS[split]
    if images.shape != (count, 28, 28):
        raise RefsnnError(f"mnist {split} images: expected shape ({count}, 28, 28), got {images.shape}")
    if labels.shape != (count,):
        raise RefsnnError(f"mnist {split} labels: expected {count} labels, got shape {labels.shape}")
    if labels.max() > 9:
        raise RefsnnError(f"mnist {split} labels must lie in 0..9, got a {labels.max()}")
    return images, labels


def load_mnist(split: str, data_dir: str | os.PathLike | None = None) -> tuple[np.ndarray, np.ndarray]:
    """MNIST ``split`` ("train" or "test"): images uint8 (N, 28, 28), labels uint8 (N,). Read-only arrays."""
    check_choice("split", split, SPLITS)
    return _load_mnist(split, str(find_data_dir(data_dir, "mnist")))


# ----------------------------------------------------------------------------- N-MNIST (events)

class Events(NamedTuple):
    """The events of one recording, in file order (timestamps non-decreasing)."""

    x: np.ndarray        # (n,) uint8, 0..33, column
    y: np.ndarray        # (n,) uint8, 0..33, row
    polarity: np.ndarray  # (n,) uint8, 0 or 1
    t: np.ndarray        # (n,) int64, microseconds from the start of the recording


def decode_events(raw: bytes | np.ndarray) -> Events:
    """Decode the 40-bit N-MNIST event words (module docstring)."""
    data = np.frombuffer(raw, dtype=np.uint8) if isinstance(raw, (bytes, bytearray)) else np.asarray(raw, np.uint8)
    if data.size % 5:
        raise RefsnnError(f"N-MNIST event data must be a multiple of 5 bytes (40-bit events), got {data.size}")
    words = data.reshape(-1, 5)                                 # (n*5,) -> (n, 5): bytes 0..4 = bits 39..0
    t = ((words[:, 2].astype(np.int64) & 0x7F) << 16) | (words[:, 3].astype(np.int64) << 8) | words[:, 4]
    return Events(x=words[:, 0].copy(), y=words[:, 1].copy(), polarity=(words[:, 2] >> 7).astype(np.uint8), t=t)


def read_events(path: str | os.PathLike) -> Events:
    """Read and check one N-MNIST recording (x, y < 34)."""
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise RefsnnError(f"cannot read the N-MNIST recording {str(path)!r}: {exc.strerror or exc}") from None
    try:
        events = decode_events(raw)
    except RefsnnError as exc:
        raise RefsnnError(f"{str(path)!r}: {exc}") from None
    if events.x.size and (events.x.max() >= NMNIST_SIZE or events.y.max() >= NMNIST_SIZE):
        raise RefsnnError(f"{str(path)!r}: event coordinates must lie in 0..{NMNIST_SIZE - 1}, got x up to "
                          f"{events.x.max()}, y up to {events.y.max()}")
    return events


def bin_events(events: Events, time_steps: int, window_us: int = NMNIST_WINDOW_US,
               binary: bool = True) -> np.ndarray:
    """Events -> frames (T, 2, 34, 34) uint8 over the fixed window [0, window_us) in T equal bins.

    Bin of an event: t_bin = floor(t * T / window_us); events with t >= window_us are dropped.
    binary: 1 if the pixel fired at least once with that polarity in the bin; else the count.
    """
    if isinstance(time_steps, bool) or not isinstance(time_steps, (int, np.integer)) or time_steps < 1:
        raise RefsnnError(f"time_steps must be an integer >= 1, got {time_steps!r}")
    keep = events.t < window_us
    step = (events.t[keep] * time_steps) // window_us           # (n,) bin index in 0..T-1
    flat = np.ravel_multi_index((step, events.polarity[keep], events.y[keep], events.x[keep]),
                                (time_steps, 2, NMNIST_SIZE, NMNIST_SIZE))
    counts = np.bincount(flat, minlength=time_steps * 2 * NMNIST_SIZE * NMNIST_SIZE)
    frames = (counts > 0) if binary else np.minimum(counts, 255)
    return frames.astype(np.uint8).reshape(time_steps, 2, NMNIST_SIZE, NMNIST_SIZE)


NMNIST_LISTS = {"train": "train1K.txt", "test": "test100.txt"}


def read_nmnist_list(split: str, data_dir: str | os.PathLike | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The (sample ids (N,), labels (N,)) of ``train1K.txt`` or ``test100.txt`` ('#' lines are comments)."""
    check_choice("split", split, SPLITS)
    path = dataset_path("nmnist", NMNIST_LISTS[split], data_dir)
    samples, labels = [], []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        fields = line.split()
        try:
            sample, label = int(fields[0]), int(fields[1])
        except (ValueError, IndexError):
            raise RefsnnError(f"{str(path)!r} line {number}: expected 'sample class', got {line!r}") from None
        if not 0 <= label <= 9:
            raise RefsnnError(f"{str(path)!r} line {number}: class must lie in 0..9, got {label}")
        samples.append(sample)
        labels.append(label)
    return np.array(samples, dtype=np.int64), np.array(labels, dtype=np.uint8)


@lru_cache(maxsize=4)
def _load_nmnist(split: str, data_dir: str, time_steps: int, window_us: int,
                 binary: bool) -> tuple[np.ndarray, np.ndarray]:
    samples, labels = read_nmnist_list(split, data_dir)
    frames = np.empty((samples.size, time_steps, 2, NMNIST_SIZE, NMNIST_SIZE), dtype=np.uint8)
    for row, sample in enumerate(samples):
        frames[row] = bin_events(read_events(dataset_path("nmnist", f"{sample}.bs2", data_dir)),
                                 time_steps, window_us, binary)
    frames.flags.writeable = False
    return frames, labels


def load_nmnist(split: str, time_steps: int, data_dir: str | os.PathLike | None = None, *,
                window_us: int = NMNIST_WINDOW_US, binary: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """N-MNIST ``split``: frames uint8 (N, T, 2, 34, 34) (see ``bin_events``), labels uint8 (N,)."""
    check_choice("split", split, SPLITS)
    return _load_nmnist(split, str(find_data_dir(data_dir, "nmnist")), int(time_steps), int(window_us), bool(binary))


# ----------------------------------------------------------------------------- CIFAR-10 (npz)

@lru_cache(maxsize=2)
def _load_cifar10(data_dir: str) -> dict[str, np.ndarray]:
    from .oracle import load_npz                    # the one npz reader: no pickle, every read error wrapped

    path = dataset_path("cifar10", "cifar10_jpeg_q75.npz", data_dir)
    arrays = load_npz(path, "CIFAR-10 data", required=tuple(f"{a}_{split}" for split in SPLITS for a in "xy"))
    for split in SPLITS:
        x, y = arrays[f"x_{split}"], arrays[f"y_{split}"]
        if x.dtype != np.uint8 or x.ndim != 4 or x.shape[1:] != (32, 32, 3):
            raise RefsnnError(f"{str(path)!r}: x_{split} must be uint8 (N, 32, 32, 3), got {x.dtype} {x.shape}")
        if y.shape != (x.shape[0],) or y.min() < 0 or y.max() > 9:
            raise RefsnnError(f"{str(path)!r}: y_{split} must be (N={x.shape[0]},) labels in 0..9, got shape "
                              f"{y.shape}" + (f", values {y.min()}..{y.max()}" if y.size else ""))
    return arrays


def load_cifar10(split: str, data_dir: str | os.PathLike | None = None) -> tuple[np.ndarray, np.ndarray]:
    """CIFAR-10 (JPEG q75 copy, see CIFAR10_NOTE) ``split``: images uint8 (N, 3, 32, 32), labels uint8 (N,)."""
    check_choice("split", split, SPLITS)
    arrays = _load_cifar10(str(find_data_dir(data_dir, "cifar10")))
    images = np.ascontiguousarray(arrays[f"x_{split}"].transpose(0, 3, 1, 2))  # (N, H, W, C) -> (N, C, H, W)
    return images, arrays[f"y_{split}"].astype(np.uint8)


# ----------------------------------------------------------------------------- splits and batches

class Split(NamedTuple):
    """One split of a data set, as stored (uint8), before encoding."""

    dataset: str
    split: str
    inputs: np.ndarray   # uint8: images (N, C, H, W) or N-MNIST frames (N, T, 2, 34, 34)
    labels: np.ndarray   # (N,) int64 in 0..9
    kind: str            # "images" or "frames"

    @property
    def input_shape(self) -> tuple[int, ...]:
        """The per-step input shape (C, H, W) the network sees."""
        return tuple(self.inputs.shape[-3:])

    def __len__(self) -> int:
        return int(self.labels.size)


def load_split(dataset: str, split: str, *, data_dir: str | os.PathLike | None = None,
               time_steps: int | None = None) -> Split:
    """The whole ``split`` of ``dataset`` (N-MNIST needs ``time_steps`` for the binning)."""
    check_choice("dataset", dataset, DATASETS)
    check_choice("split", split, SPLITS)
    if dataset == "mnist":
        images, labels = load_mnist(split, data_dir)
        return Split(dataset, split, images[:, None], labels.astype(np.int64), "images")  # (N, 28, 28) -> (N, 1, 28, 28)
    if dataset == "cifar10":
        images, labels = load_cifar10(split, data_dir)
        return Split(dataset, split, images, labels.astype(np.int64), "images")
    if time_steps is None:
        raise RefsnnError("nmnist: time_steps is needed to bin the events into frames")
    frames, labels = load_nmnist(split, time_steps, data_dir)
    return Split(dataset, split, frames, labels.astype(np.int64), "frames")


def balanced_subset(labels: np.ndarray, size: int | None, seed: int = 0) -> np.ndarray:
    """Indices of ``size`` samples with the classes as balanced as possible (all of them if size is None).

    A fixed permutation (from ``seed``) is reordered class-interleaved (the first sample of each
    class in permutation order, then the second, ...), so every prefix is balanced and a smaller
    subset is contained in a larger one. Needed because some stored splits are sorted by class.
    """
    labels = np.asarray(labels)
    if size is None:
        size = labels.size
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or not 1 <= size <= labels.size:
        raise RefsnnError(f"subset size must be an integer in 1..{labels.size}, got {size!r}")
    order = np.random.default_rng(seed).permutation(labels.size)
    rank = np.empty(labels.size, dtype=np.int64)                # rank of each sample within its class, in `order`
    for label in np.unique(labels):
        members = order[labels[order] == label]
        rank[members] = np.arange(members.size)
    position = np.empty(labels.size, dtype=np.int64)
    position[order] = np.arange(labels.size)
    interleaved = np.lexsort((position, rank))                  # by rank, then by permutation position
    return np.sort(interleaved[:size])


def encode_batch(split: Split, indices: Sequence[int] | np.ndarray, time_steps: int, encoding: str,
                 rng: np.random.Generator | None = None, dtype: str = "float64") -> np.ndarray:
    """Samples ``indices`` of ``split`` -> network input (T, B, C, H, W) of ``dtype``.

    direct: pixel / 255 at every step; standardized: (pixel / 255 - mean_c) / std_c at every
    step (CHANNEL_STATS); bernoulli: S_t ~ Bernoulli(pixel / 255), needs ``rng``;
    events: the N-MNIST frames (their T must equal ``time_steps``).
    """
    check_choice("encoding", encoding, ENCODINGS)
    indices = np.asarray(indices, dtype=np.int64)
    if split.kind == "frames":
        if encoding != "events":
            raise RefsnnError(f"{split.dataset} holds event frames: encoding must be 'events', got {encoding!r}")
        frames = split.inputs[indices]                          # (B, T, 2, 34, 34)
        if frames.shape[1] != time_steps:
            raise RefsnnError(f"the frames were binned into {frames.shape[1]} steps, not time_steps={time_steps}")
        return np.ascontiguousarray(frames.transpose(1, 0, 2, 3, 4), dtype=dtype)  # (B, T, ...) -> (T, B, ...)
    if encoding == "events":
        raise RefsnnError(f"{split.dataset} holds images: encoding must be 'direct', 'standardized' or 'bernoulli', got 'events'")
    pixels = split.inputs[indices].astype(dtype) / 255.0        # (B, C, H, W) in [0, 1]
    if encoding == "standardized":
        mean, std = (np.asarray(v, dtype=dtype).reshape(-1, 1, 1) for v in CHANNEL_STATS[split.dataset])
        pixels = (pixels - mean) / std                          # (C, 1, 1) per channel
        return np.ascontiguousarray(np.broadcast_to(pixels, (time_steps, *pixels.shape)))  # (B, ...) -> (T, B, ...)
    if encoding == "direct":
        return np.ascontiguousarray(np.broadcast_to(pixels, (time_steps, *pixels.shape)))  # (B, ...) -> (T, B, ...)
    if rng is None:
        raise RefsnnError("the bernoulli encoding needs a seeded rng")
    draws = rng.random((time_steps, *pixels.shape))            # (T, B, C, H, W)
    return (draws < pixels).astype(dtype)
