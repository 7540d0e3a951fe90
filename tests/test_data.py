"""Loaders on the real files of ../shared/data (beside the checkout), encodings, the missing-data error.

The data directory is located from the repository root, as CI has it (a clean clone with
../shared beside it). When it is missing these tests FAIL under CI=true and skip elsewhere:
refsnn never substitutes fake data, and neither do its tests (only the bit-level decoders are
also checked on a few hand-made bytes).
"""

import gzip
import hashlib
import struct

import numpy as np
import pytest

from refsnn import data
from refsnn.errors import RefsnnError

MNIST_TEST_IMAGES_MD5 = "2646ac647ad5339dbf082846283269ea"


# ----------------------------------------------------------------------------- MNIST

def test_mnist_shapes_dtypes_and_labels(data_dir):
    for split, count in (("train", 60_000), ("test", 10_000)):
        images, labels = data.load_mnist(split, data_dir)
        assert images.shape == (count, 28, 28) and images.dtype == np.uint8
        assert labels.shape == (count,) and labels.dtype == np.uint8
        assert set(np.unique(labels)) == set(range(10))
        assert images.max() == 255 and images.min() == 0
        assert not images.flags.writeable              # cached arrays cannot be modified by a caller


def test_mnist_test_images_match_the_canonical_checksum(data_dir):
    path = data_dir / "mnist" / "t10k-images-idx3-ubyte.gz"
    with gzip.open(path, "rb") as handle:
        assert hashlib.md5(handle.read()).hexdigest() == MNIST_TEST_IMAGES_MD5
    # and what the loader returns is exactly that file's data: header + pixels hash the same
    images, _ = data.load_mnist("test", data_dir)
    rebuilt = struct.pack(">I3I", 0x00000803, *images.shape) + images.tobytes()
    assert hashlib.md5(rebuilt).hexdigest() == MNIST_TEST_IMAGES_MD5


def test_mnist_split_is_n_1_28_28_images(data_dir):
    split = data.load_split("mnist", "test", data_dir=data_dir)
    assert split.inputs.shape == (10_000, 1, 28, 28) and split.input_shape == (1, 28, 28)
    assert split.labels.dtype == np.int64 and len(split) == 10_000


def _write_gz(path, payload: bytes):
    with gzip.open(path, "wb") as handle:
        handle.write(payload)
    return path


def test_idx_reader_checks_magic_and_sizes(tmp_path):
    good = _write_gz(tmp_path / "good.gz", struct.pack(">I2I", 0x00000802, 2, 3) + bytes(range(6)))
    assert data.read_idx(good, 2).tolist() == [[0, 1, 2], [3, 4, 5]]
    with pytest.raises(RefsnnError, match="magic number 0x00000802, expected 0x00000803"):
        data.read_idx(good, 3)
    short = _write_gz(tmp_path / "short.gz", struct.pack(">I2I", 0x00000802, 2, 3) + bytes(5))
    with pytest.raises(RefsnnError, match=r"shape \(2, 3\) \(6 bytes of data\), the file holds 5"):
        data.read_idx(short, 2)
    float_data = _write_gz(tmp_path / "float.gz", struct.pack(">I1I", 0x00000D01, 1) + bytes(4))
    with pytest.raises(RefsnnError, match="magic"):
        data.read_idx(float_data, 1)
    (tmp_path / "plain").write_bytes(b"not gzip")
    with pytest.raises(RefsnnError, match="gzip"):
        data.read_idx(tmp_path / "plain", 1)


# ----------------------------------------------------------------------------- N-MNIST

def test_event_words_decode_bit_by_bit():
    # x = 33, y = 7, polarity 1, t = 0x7ABCDE; then x = 0, y = 33, polarity 0, t = 5
    raw = bytes([33, 7, 0x80 | 0x7A, 0xBC, 0xDE, 0, 33, 0x00, 0x00, 0x05])
    events = data.decode_events(raw)
    assert events.x.tolist() == [33, 0] and events.y.tolist() == [7, 33]
    assert events.polarity.tolist() == [1, 0] and events.t.tolist() == [0x7ABCDE, 5]
    with pytest.raises(RefsnnError, match="multiple of 5 bytes"):
        data.decode_events(raw[:7])


def test_one_real_recording_decodes_sanely(data_dir):
    path = data_dir / "nmnist-small" / "1.bs2"
    events = data.read_events(path)
    assert events.x.size == path.stat().st_size // 5 > 1000
    assert events.x.max() < 34 and events.y.max() < 34
    assert set(np.unique(events.polarity)) == {0, 1}
    assert np.all(np.diff(events.t) >= 0)                # timestamps never go back
    assert events.t[-1] > events.t[0]
    assert 250_000 < events.t[-1] < 400_000             # about 300 ms: three saccades


def test_binning_places_events_in_fixed_equal_windows():
    events = data.Events(x=np.array([1, 1, 2, 3], np.uint8), y=np.array([4, 4, 5, 6], np.uint8),
                         polarity=np.array([0, 0, 1, 1], np.uint8),
                         t=np.array([0, 10, 150_000, 300_000], np.int64))
    frames = data.bin_events(events, 2)                  # bins [0, 150 ms), [150, 300 ms); t = 300 ms dropped
    assert frames.shape == (2, 2, 34, 34) and frames.dtype == np.uint8
    assert frames[0, 0, 4, 1] == 1 and frames[1, 1, 5, 2] == 1 and frames.sum() == 2
    counts = data.bin_events(events, 2, binary=False)
    assert counts[0, 0, 4, 1] == 2 and counts.sum() == 3


def test_real_recording_frames_keep_every_event_inside_the_window(data_dir):
    events = data.read_events(data_dir / "nmnist-small" / "60001.bs2")
    counts = data.bin_events(events, 5, binary=False)
    assert counts.sum() == np.sum(events.t < data.NMNIST_WINDOW_US)
    assert np.all(counts.sum(axis=(1, 2, 3)) > 0)        # every 60 ms bin holds events


def test_nmnist_lists_and_split(data_dir):
    samples, labels = data.read_nmnist_list("train", data_dir)
    assert samples.tolist() == list(range(1, 1001)) and set(np.unique(labels)) == set(range(10))
    samples, labels = data.read_nmnist_list("test", data_dir)
    assert samples.tolist() == list(range(60001, 60101)) and labels.max() <= 9
    # the N-MNIST recordings are saccades over the MNIST digits: their labels agree
    _, mnist_train_labels = data.load_mnist("train", data_dir)
    assert np.array_equal(data.read_nmnist_list("train", data_dir)[1], mnist_train_labels[:1000])
    _, mnist_test_labels = data.load_mnist("test", data_dir)
    assert np.array_equal(labels, mnist_test_labels[:100])
    split = data.load_split("nmnist", "test", data_dir=data_dir, time_steps=5)
    assert split.inputs.shape == (100, 5, 2, 34, 34) and split.kind == "frames"
    assert set(np.unique(split.inputs)) == {0, 1}
    x = data.encode_batch(split, [0, 3], 5, "events")
    assert x.shape == (5, 2, 2, 34, 34) and x.dtype == np.float64
    assert np.array_equal(x[:, 1], split.inputs[3])
    with pytest.raises(RefsnnError, match="binned into 5 steps"):
        data.encode_batch(split, [0], 6, "events")
    with pytest.raises(RefsnnError, match="encoding must be 'events'"):
        data.encode_batch(split, [0], 5, "direct")


# ----------------------------------------------------------------------------- CIFAR-10

def test_cifar10_is_nchw_uint8_and_encodes_to_unit_interval(data_dir):
    images, labels = data.load_cifar10("train", data_dir)
    assert images.shape == (10_000, 3, 32, 32) and images.dtype == np.uint8
    assert np.bincount(labels).tolist() == [1000] * 10
    with np.load(data_dir / "cifar10-jpeg" / "cifar10_jpeg_q75.npz") as archive:
        assert np.array_equal(images[7], archive["x_train"][7].transpose(2, 0, 1))   # HWC -> CHW
    split = data.load_split("cifar10", "test", data_dir=data_dir)
    assert split.inputs.shape == (10_000, 3, 32, 32) and split.labels.max() == 9
    x = data.encode_batch(split, [0, 1], 5, "direct")
    assert x.shape == (5, 2, 3, 32, 32) and 0.0 <= x.min() and x.max() <= 1.0
    assert "JPEG" in data.CIFAR10_NOTE


# ----------------------------------------------------------------------------- encodings, subsets

def _image_split(rng, n=6):
    pixels = rng.integers(0, 256, size=(n, 1, 4, 4), dtype=np.uint8)
    return data.Split("mnist", "train", pixels, np.arange(n) % 3, "images")


def test_direct_encoding_repeats_the_pixels_at_every_step(rng):
    split = _image_split(rng)
    x = data.encode_batch(split, [4, 1], 3, "direct")
    assert x.shape == (3, 2, 1, 4, 4)
    for t in range(3):
        assert np.array_equal(x[t], split.inputs[[4, 1]] / 255.0)
    with pytest.raises(RefsnnError, match="'direct', 'standardized' or 'bernoulli'"):
        data.encode_batch(split, [0], 3, "events")


@pytest.mark.parametrize("dataset", ["mnist", "cifar10"])
def test_standardized_encoding_uses_the_training_split_statistics(data_dir, dataset):
    split = data.load_split(dataset, "train", data_dir=data_dir)
    pixels = split.inputs.astype(np.float64) / 255.0                       # (N, C, H, W)
    mean, std = data.CHANNEL_STATS[dataset]
    np.testing.assert_allclose(pixels.mean(axis=(0, 2, 3)), mean, atol=1e-6)
    np.testing.assert_allclose(pixels.std(axis=(0, 2, 3)), std, atol=1e-6)
    x = data.encode_batch(split, np.arange(500), 2, "standardized")     # (T, B, C, H, W)
    assert np.array_equal(x[0], x[1])
    expected = (pixels[:500] - np.reshape(mean, (-1, 1, 1))) / np.reshape(std, (-1, 1, 1))
    np.testing.assert_allclose(x[0], expected, rtol=1e-12, atol=1e-12)


def test_bernoulli_encoding_is_seeded_binary_and_has_the_pixel_rate(rng):
    split = data.Split("mnist", "train", np.full((1, 1, 10, 10), 64, np.uint8), np.zeros(1, np.int64), "images")
    x = data.encode_batch(split, [0], 2000, "bernoulli", np.random.default_rng(3))
    assert set(np.unique(x)) == {0.0, 1.0}
    assert x.mean() == pytest.approx(64 / 255, abs=0.005)
    again = data.encode_batch(split, [0], 2000, "bernoulli", np.random.default_rng(3))
    assert np.array_equal(x, again)
    with pytest.raises(RefsnnError, match="seeded rng"):
        data.encode_batch(split, [0], 2, "bernoulli")


def test_balanced_subsets_are_balanced_nested_and_fixed():
    labels = np.repeat(np.arange(10), 100)              # sorted by class, like the stored CIFAR-10 split
    small, large = data.balanced_subset(labels, 50), data.balanced_subset(labels, 205)
    assert np.bincount(labels[small]).tolist() == [5] * 10
    assert sorted(np.bincount(labels[large]).tolist()) == [20] * 5 + [21] * 5
    assert set(small) <= set(large)
    assert np.array_equal(small, data.balanced_subset(labels, 50))
    assert data.balanced_subset(labels, None).size == 1000
    with pytest.raises(RefsnnError, match="1..1000"):
        data.balanced_subset(labels, 1001)


# ----------------------------------------------------------------------------- where the data are

def test_a_missing_directory_says_where_to_put_which_files(tmp_path, monkeypatch):
    missing = tmp_path / "nowhere"
    with pytest.raises(RefsnnError) as info:
        data.find_data_dir(missing, "mnist")
    message = str(info.value)
    for expected in (str(missing), "--data", "REFSNN_DATA", "mnist/", "t10k-images-idx3-ubyte.gz", "http",
                     "never substitutes fake data"):
        assert expected in message, expected
    monkeypatch.setenv("REFSNN_DATA", str(missing))
    with pytest.raises(RefsnnError, match=r"from \$REFSNN_DATA\) does not exist"):
        data.load_mnist("test")
    with pytest.raises(RefsnnError, match="cifar10_jpeg_q75.npz"):
        data.load_cifar10("test")


def test_a_missing_file_is_named_with_its_source(tmp_path):
    (tmp_path / "nmnist-small").mkdir()
    with pytest.raises(RefsnnError) as info:
        data.read_nmnist_list("test", tmp_path)
    message = str(info.value)
    assert str(tmp_path / "nmnist-small" / "test100.txt") in message and "garrickorchard" in message


def test_the_default_is_shared_data_beside_the_repository(data_dir, monkeypatch, tmp_path):
    monkeypatch.delenv("REFSNN_DATA", raising=False)
    monkeypatch.chdir(tmp_path)                          # not beside cwd: found beside the repository root
    assert data.find_data_dir().resolve() == data_dir.resolve()
    monkeypatch.setenv("REFSNN_DATA", str(tmp_path))     # the variable wins over the default
    assert data.find_data_dir() == tmp_path
    assert data.find_data_dir(data_dir) == data_dir      # and the argument over the variable
