"""The grain training pipeline: determinism, epochs, sharding over devices and processes, resume, flips."""
import json

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from datasets.pipeline import ArraySource, epoch_permutation, flip_mask, make_train_iter, open_source, to_float

N, H = 24, 4


def ids_source(n=N):
    """Images whose pixel (0, 0, 0) is the example id, and whose first row is asymmetric (to see flips)."""
    imgs = np.zeros((n, H, H, 3), np.uint8)
    imgs[:, 0, 0, 0] = np.arange(n)
    imgs[:, 0, -1, 1] = 255
    return ArraySource(imgs, labels=np.arange(n, dtype=np.int32))


def ids_of(batch) -> np.ndarray:
    """Example ids of a batch [D, b, H, W, C] in device-major order, unflipping where needed."""
    x = np.rint((batch["image"] + 1.0) * 127.5).astype(np.int64)          # [D,b,H,W,C]
    flipped = x[:, :, 0, 0, 1] == 255
    ids = np.where(flipped, x[:, :, 0, -1, 0], x[:, :, 0, 0, 0])
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
    from_files.close()
    from_memory.close()


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
