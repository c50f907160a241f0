"""The grain training pipeline: determinism, epochs, sharding over devices and processes, resume, flips, and
named splits (make_batches)."""
import json

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from datasets.pipeline import (ArraySource, derived_seed, epoch_permutation, flip_mask, make_batches, make_train_iter,
                               open_source, to_float)

N, H = 24, 4


def ids_source(n=N):
    """Images whose pixel (0, 0, 0) is the example id, and whose first row is asymmetric (to see flips)."""
    imgs = np.zeros((n, H, H, 3), np.uint8)
    imgs[:, 0, 0, 0] = np.arange(n)
    imgs[:, 0, -1, 1] = 255
    return ArraySource(imgs, labels=np.arange(n, dtype=np.int32))


def ids_and_flips(images) -> tuple[np.ndarray, np.ndarray]:
    """Example ids and flips of ids_source images [D, b, H, W, C] in [-1, 1], each [D, b]."""
    x = np.rint((images + 1.0) * 127.5).astype(np.int64)                   # [D,b,H,W,C]
    flipped = x[:, :, 0, 0, 1] == 255
    return np.where(flipped, x[:, :, 0, -1, 0], x[:, :, 0, 0, 0]), flipped


def ids_of(batch) -> np.ndarray:
    """Example ids of a batch [D, b, H, W, C] in device-major order, unflipping where needed."""
    ids, _ = ids_and_flips(batch["image"])
    np.testing.assert_array_equal(ids, batch["label"])                     # labels travel with their images
    return ids.reshape(-1)


def take(it, k):
    return [next(it) for _ in range(k)]


def test_layout_dtype_range_and_labels():
    it = make_train_iter(ids_source(), global_batch=8, seed=0, num_local_devices=4)
    b = next(it)
    assert b["image"].shape == (4, 2, H, H, 3) and b["image"].dtype == np.float32
    assert b["label"].shape == (4, 2) and b["label"].dtype == np.int32
    assert b["image"].min() == -1.0 and b["image"].max() == 1.0
    it.close()


def test_uint8_to_float_matches_reference():
    x = np.arange(256, dtype=np.uint8)
    np.testing.assert_array_equal(to_float(x), x.astype(np.float32) / np.float32(127.5) - np.float32(1.0))
    assert to_float(x)[0] == -1.0 and to_float(x)[-1] == 1.0


def test_each_epoch_is_a_permutation_and_seeded():
    it = make_train_iter(ids_source(), global_batch=8, seed=3, num_local_devices=2, flip=False)
    ids = np.concatenate([ids_of(b) for b in take(it, 3 * N // 8)])        # 3 epochs
    epochs = ids.reshape(3, N)
    for e in range(3):
        assert sorted(epochs[e]) == list(range(N))
        np.testing.assert_array_equal(epochs[e], epoch_permutation(3, e, N))
    assert not np.array_equal(epochs[0], epochs[1])                         # reshuffled every epoch
    # Same seed, no reader threads: the same stream (threads only change when batches are computed).
    again = make_train_iter(ids_source(), global_batch=8, seed=3, num_local_devices=2, flip=False, num_threads=0)
    np.testing.assert_array_equal(np.concatenate([ids_of(b) for b in take(again, 3)]), ids[:24])
    other = make_train_iter(ids_source(), global_batch=8, seed=4, num_local_devices=2, flip=False)
    assert not np.array_equal(np.concatenate([ids_of(b) for b in take(other, 3)]), ids[:24])
    for i in (it, again, other):
        i.close()


def test_batches_cross_epoch_boundaries_without_dropping():
    it = make_train_iter(ids_source(10), global_batch=4, seed=1, num_local_devices=1, flip=False)
    ids = np.concatenate([ids_of(b) for b in take(it, 5)])                 # 20 positions = exactly 2 epochs
    assert sorted(ids[:10]) == list(range(10)) and sorted(ids[10:]) == list(range(10))
    it.close()


@settings(deadline=None, max_examples=20)
@given(devices=st.sampled_from([1, 2, 4, 8]), processes=st.sampled_from([1, 2, 3]), per_device=st.integers(1, 3),
       seed=st.integers(0, 2 ** 31))
def test_sharding_over_devices_and_processes_is_disjoint_and_complete(devices, processes, per_device, seed):
    gb = devices * processes * per_device
    steps = 5
    per_process = []
    for q in range(processes):
        it = make_train_iter(ids_source(), global_batch=gb, seed=seed, num_local_devices=devices, process_index=q,
                             process_count=processes, num_threads=0)
        batches = take(it, steps)
        assert batches[0]["image"].shape == (devices, per_device, H, H, 3)
        per_process.append([ids_of(b) for b in batches])
    # The global batch k is the processes' local batches side by side, in process order ...
    global_ids = np.concatenate([np.concatenate([per_process[q][k] for q in range(processes)])
                                 for k in range(steps)])
    # ... and equals the single-process stream with the same global batch (sharding does not change the stream).
    single = make_train_iter(ids_source(), global_batch=gb, seed=seed, num_local_devices=1, num_threads=0)
    np.testing.assert_array_equal(global_ids, np.concatenate([ids_of(b) for b in take(single, steps)]))
    # Every complete epoch in it shows each example exactly once.
    for e in range(len(global_ids) // N):
        assert sorted(global_ids[e * N:(e + 1) * N]) == list(range(N))


def test_resume_from_state_gives_the_same_stream():
    it = make_train_iter(ids_source(), global_batch=6, seed=7, num_local_devices=2)
    take(it, 5)                                                   # mid-epoch (30 = 1 epoch + 6)
    state = json.loads(json.dumps(it.get_state()))                # JSON round trip, as in a checkpoint
    assert state == {"epoch": 1, "index": 6, "seed": 7, "num_examples": N}
    expected = take(it, 6)
    resumed = make_train_iter(ids_source(), global_batch=6, seed=7, num_local_devices=2)
    resumed.set_state(state)
    for a, b in zip(expected, take(resumed, 6)):
        np.testing.assert_array_equal(a["image"], b["image"])     # same examples and same flips
    it.set_state(state)                                           # rewinding an iterator in use works too
    np.testing.assert_array_equal(next(it)["image"], expected[0]["image"])
    for i in (it, resumed):
        i.close()


def test_set_state_validation():
    it = make_train_iter(ids_source(), global_batch=4, seed=1, num_local_devices=1)
    with pytest.raises(ValueError, match="seed=2 but this pipeline has seed=1"):
        it.set_state({"epoch": 0, "index": 0, "seed": 2})
    with pytest.raises(ValueError, match="outside a 24-example dataset"):
        it.set_state({"epoch": 0, "index": 24})
    with pytest.raises(ValueError, match="integer 'epoch' and 'index'"):
        it.set_state({"epoch": 0})


def test_flips_are_mirror_images_and_about_half():
    src = ids_source()
    it = make_train_iter(src, global_batch=8, seed=5, num_local_devices=1)
    b = next(it)
    pos = np.arange(8)
    flips = flip_mask(5, pos)
    idx = epoch_permutation(5, 0, N)[:8]
    ref = to_float(src.images[idx])
    ref[flips] = ref[flips, :, ::-1]
    np.testing.assert_array_equal(b["image"][0], ref)
    many = flip_mask(5, np.arange(10_000))
    assert 0.47 < many.mean() < 0.53
    assert not np.array_equal(many, flip_mask(6, np.arange(10_000)))
    no_flip = make_train_iter(src, global_batch=8, seed=5, num_local_devices=1, flip=False)
    np.testing.assert_array_equal(next(no_flip)["image"][0], to_float(src.images[idx]))
    it.close()
    no_flip.close()


def test_argument_errors():
    src = ids_source()
    with pytest.raises(ValueError, match="multiple of process_count \\* num_local_devices = 2 \\* 4"):
        make_train_iter(src, global_batch=12, seed=0, num_local_devices=4, process_count=2)
    with pytest.raises(ValueError, match="process_index 2 is not in"):
        make_train_iter(src, global_batch=8, seed=0, num_local_devices=1, process_index=2, process_count=2)
    with pytest.raises(ValueError, match="empty"):
        make_train_iter(ArraySource(np.zeros((0, 4, 4, 3), np.uint8)), global_batch=1, seed=0, num_local_devices=1)
    with pytest.raises(ValueError, match="uint8 images"):
        ArraySource(np.zeros((2, 4, 4, 3), np.float32))
    with pytest.raises(FileNotFoundError, match="no built dataset"):
        open_source("/nonexistent/dataset/dir")


def test_tfds_source_end_to_end(tmp_path):
    """A built dataset read through tfds + grain gives the same batches as the same images in memory."""
    from datasets.builders import prepare_dataset
    from datasets.demo import load_demo_domains
    prepare_dataset("demo", tmp_path / "demo", resolution=16, variants=1, progress=False)
    a, _, _ = load_demo_domains(16, variants=1)
    from_memory = make_train_iter(ArraySource(a), global_batch=16, seed=2, num_local_devices=8)
    assert len(open_source(str(tmp_path / "demo"), "trainA")) == 100
    with pytest.raises(ValueError, match="no split 'train'"):
        make_train_iter(str(tmp_path / "demo"), global_batch=16, seed=2, num_local_devices=8)
    from_files = make_train_iter(open_source(str(tmp_path / "demo"), "trainA"), global_batch=16, seed=2,
                                 num_local_devices=8)
    for x, y in zip(take(from_files, 8), take(from_memory, 8)):       # 128 positions: beyond one epoch
        assert set(x) == {"image"}                                       # the filename string is not batched
        np.testing.assert_array_equal(x["image"], y["image"])
    # Named splits of the folder: each split opened by name, the first one's stream is make_train_iter's.
    named = make_batches(str(tmp_path / "demo"), {"A": ("trainA", "image"), "B": ("trainB", "image")},
                         global_batch=16, seed=2, num_local_devices=8)
    assert named.batch_shapes() == {"A": (16, 16, 3), "B": (16, 16, 3)}
    from_memory.set_state({"epoch": 0, "index": 0})
    for x, y in zip(take(named, 2), take(from_memory, 2)):
        np.testing.assert_array_equal(x["A"], y["image"])
    with pytest.raises(ValueError, match=f"dataset {tmp_path / 'demo'} has no split 'trainC'; it has trainA"):
        make_batches(str(tmp_path / "demo"), {"A": ("trainC", "image")}, global_batch=16, seed=2,
                     num_local_devices=8)
    for i in (from_files, from_memory, named):
        i.close()


class _PairSource:
    """A SPADE-style source: every example holds an image and its conditioning image (here equal)."""

    def __init__(self, images):
        self.images = images

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        return {"image": self.images[i], "sketch": self.images[i].copy(), "filename": f"{i}.png".encode()}


def test_paired_images_are_flipped_together():
    imgs = np.random.default_rng(0).integers(0, 256, (16, 4, 4, 3), dtype=np.uint8)
    it = make_train_iter(_PairSource(imgs), global_batch=16, seed=9, num_local_devices=2)
    b = next(it)
    assert set(b) == {"image", "sketch"}
    np.testing.assert_array_equal(b["image"], b["sketch"])
    assert flip_mask(9, np.arange(16)).any()                       # some of them were flipped
    it.close()


def test_datasets_package_is_ours():
    # A top-level `datasets` package would clash with Hugging Face's; make sure this repo's is the one imported.
    import pathlib

    import datasets
    assert pathlib.Path(datasets.__file__).resolve().parent == pathlib.Path(__file__).resolve().parents[1] / "datasets"


# -- named splits (make_batches) -------------------------------------------------------------------------------------
def stream_ids(batches, key) -> tuple[np.ndarray, np.ndarray]:
    """Ids and flips of `key` over a list of batches, in stream order."""
    pairs = [ids_and_flips(b[key]) for b in batches]
    return np.concatenate([i.reshape(-1) for i, _ in pairs]), np.concatenate([f.reshape(-1) for _, f in pairs])


def test_one_split_is_make_train_iter_bit_for_bit():
    kw = dict(global_batch=8, seed=3, num_local_devices=4)
    ref = make_train_iter(ids_source(), **kw)
    new = make_batches(ids_source(), {"image": ("train", "image")}, **kw)
    for a, b in zip(take(ref, 7), take(new, 7)):                       # 56 positions: into the third epoch
        assert set(b) == {"image"}                                      # only what was asked for
        assert b["image"].dtype == a["image"].dtype == np.float32
        assert b["image"].tobytes() == a["image"].tobytes()
    assert new.get_state() == {"train": ref.get_state()}
    ref.close()
    new.close()


def test_two_splits_are_independent_streams_each_a_permutation_per_epoch():
    data = {"trainA": ids_source(24), "trainB": ids_source(16)}
    it = make_batches(data, {"A": ("trainA", "image"), "B": ("trainB", "image")}, global_batch=8, seed=5,
                      num_local_devices=2)
    batches = take(it, 6)                                               # 48 positions: 2 epochs of A, 3 of B
    assert set(batches[0]) == {"A", "B"} and batches[0]["B"].shape == (2, 4, H, H, 3)
    a_ids, a_flips = stream_ids(batches, "A")
    b_ids, b_flips = stream_ids(batches, "B")
    for ids, n in ((a_ids, 24), (b_ids, 16)):
        for e in range(len(ids) // n):
            assert sorted(ids[e * n:(e + 1) * n]) == list(range(n))
    np.testing.assert_array_equal(a_ids[:24], epoch_permutation(5, 0, 24))           # the first split: seed itself
    np.testing.assert_array_equal(a_flips, flip_mask(5, np.arange(48)))
    seed_b = derived_seed(5, "trainB")
    assert seed_b != 5 and 0 <= seed_b < 2 ** 63
    np.testing.assert_array_equal(b_ids[:16], epoch_permutation(seed_b, 0, 16))
    np.testing.assert_array_equal(b_flips, flip_mask(seed_b, np.arange(48)))
    assert not np.array_equal(a_flips, b_flips)
    # One source object serves every split asked for; its two streams still differ.
    same = make_batches(ids_source(), {"A": ("trainA", "image"), "B": ("trainB", "image")}, global_batch=8,
                        seed=5, num_local_devices=2, num_threads=0)
    two = take(same, 3)
    assert not np.array_equal(stream_ids(two, "A")[0], stream_ids(two, "B")[0])
    for i in (it, same):
        i.close()


def test_features_of_one_split_come_from_the_same_examples_flipped_together():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, (16, 6, 6, 3), dtype=np.uint8)
    src = ArraySource(images, labels=np.arange(16, dtype=np.int32), sketch=255 - images)   # rough = f(image)
    it = make_batches(src, {"image": ("train", "image"), "rough": ("train", "sketch"), "id": ("train", "label")},
                      global_batch=16, seed=9, num_local_devices=2)
    assert it.batch_shapes() == {"image": (6, 6, 3), "rough": (6, 6, 3), "id": ()}
    b = next(it)
    image = np.rint((b["image"] + 1) * 127.5).astype(np.uint8)           # [2,8,6,6,3]
    rough = np.rint((b["rough"] + 1) * 127.5).astype(np.uint8)
    np.testing.assert_array_equal(rough, 255 - image)                   # a flip of one is a flip of the other
    flips = flip_mask(9, np.arange(16)).reshape(2, 8)
    assert flips.any() and not flips.all()
    ref = images[b["id"]]                                               # [2,8,6,6,3] by the ids that came along
    ref[flips] = ref[flips][:, :, ::-1]
    np.testing.assert_array_equal(image, ref)
    it.close()


def test_batch_shapes_read_one_example_per_split_and_load_no_batch():
    class Counting(ArraySource):
        def __init__(self, *a, **kw):
            super().__init__(*a, **kw)
            self.read = []

        def __getitem__(self, i):
            self.read.append(int(i))
            return super().__getitem__(i)

    data = {"trainA": Counting(np.zeros((4, 8, 8, 3), np.uint8)), "trainB": Counting(np.zeros((3, 2, 2, 1), np.uint8))}
    it = make_batches(data, {"B": ("trainB", "image"), "A": ("trainA", "image")}, global_batch=2, seed=0,
                      num_local_devices=1)
    assert it.batch_shapes() == {"B": (2, 2, 1), "A": (8, 8, 3)}
    assert list(it.streams) == ["trainB", "trainA"]                      # order of first appearance
    assert data["trainA"].read == [0] and data["trainB"].read == [0]
    it.close()


def test_resume_two_splits_exactly_and_from_a_single_stream_state():
    data = {"trainA": ids_source(24), "trainB": ids_source(10)}
    feats = {"A": ("trainA", "image"), "B": ("trainB", "image")}
    kw = dict(global_batch=6, seed=7, num_local_devices=2)
    it = make_batches(data, feats, **kw)
    take(it, 5)
    state = json.loads(json.dumps(it.get_state()))
    assert state == {"trainA": {"epoch": 1, "index": 6, "seed": 7, "num_examples": 24},
                     "trainB": {"epoch": 3, "index": 0, "seed": derived_seed(7, "trainB"), "num_examples": 10}}
    expected = take(it, 4)
    resumed = make_batches(data, feats, **kw)
    resumed.set_state(state)
    for a, b in zip(expected, take(resumed, 4)):
        for key in feats:
            np.testing.assert_array_equal(a[key], b[key])
    # A checkpoint written by make_train_iter holds one stream's state: it resumes a one-split pipeline.
    old = make_train_iter(ids_source(), **kw)
    take(old, 5)
    one = make_batches(ids_source(), {"image": ("train", "image")}, **kw)
    one.set_state(old.get_state())
    for a, b in zip(take(old, 3), take(one, 3)):
        np.testing.assert_array_equal(a["image"], b["image"])
    with pytest.raises(ValueError, match="single-stream data state .* cannot resume the 2 splits trainA, trainB"):
        resumed.set_state(old.get_state())
    for i in (it, resumed, old, one):
        i.close()


def test_set_state_checks_every_split_before_moving_any():
    data = {"trainA": ids_source(24), "trainB": ids_source(10)}
    it = make_batches(data, {"A": ("trainA", "image"), "B": ("trainB", "image")}, global_batch=2, seed=1,
                      num_local_devices=1, num_threads=0)
    first = next(it)["A"]
    bad = {"trainA": {"epoch": 0, "index": 0}, "trainB": {"epoch": 0, "index": 0, "seed": 1}}
    with pytest.raises(ValueError, match=f"split 'trainB': .* but this pipeline has seed={derived_seed(1, 'trainB')}"):
        it.set_state(bad)
    assert not np.array_equal(next(it)["A"], first)                      # trainA did not rewind
    with pytest.raises(ValueError, match=r"data state has splits \[trainA\] but this pipeline reads \[trainA, trainB"):
        it.set_state({"trainA": {"epoch": 0, "index": 0}})
    with pytest.raises(ValueError, match="split 'trainA': data iterator state must have integer 'epoch'"):
        it.set_state({"trainA": 3, "trainB": {"epoch": 0, "index": 0}})
    it.close()


def test_make_batches_errors_name_the_split_and_feature():
    src = ids_source()
    kw = dict(global_batch=4, seed=0, num_local_devices=1)
    with pytest.raises(ValueError, match="the data dict has no split 'trainC'; it has trainA, trainB"):
        make_batches({"trainA": src, "trainB": src}, {"A": ("trainC", "image")}, **kw)
    with pytest.raises(ValueError, match="split 'train' of the ArraySource source has no feature 'rough' "
                                         "\\(asked for batch key 'r'\\); it has image, label"):
        make_batches(src, {"image": ("train", "image"), "r": ("train", "rough")}, **kw)
    empty = ArraySource(np.zeros((0, 4, 4, 3), np.uint8))
    with pytest.raises(ValueError, match="split 'trainB' of the data dict is empty"):
        make_batches({"trainA": src, "trainB": empty}, {"A": ("trainA", "image"), "B": ("trainB", "image")}, **kw)
    with pytest.raises(ValueError, match="features\\['A'\\] must be a \\(split, feature\\) pair"):
        make_batches(src, {"A": "trainA"}, **kw)
    with pytest.raises(ValueError, match="non-empty dict"):
        make_batches(src, {}, **kw)
    with pytest.raises(ValueError, match="feature 'filename' of split 'train' .* is text"):
        make_batches(_PairSource(np.zeros((2, 4, 4, 3), np.uint8)), {"f": ("train", "filename")}, **kw)
    with pytest.raises(ValueError, match="feature 'rough' has shape \\(3, 4, 4, 3\\) for 2 images"):
        ArraySource(np.zeros((2, 4, 4, 3), np.uint8), rough=np.zeros((3, 4, 4, 3), np.uint8))
    with pytest.raises(FileNotFoundError, match="no built dataset"):
        make_batches("/nonexistent/dataset/dir", {"image": ("train", "image")}, **kw)
