"""The tfds builders end to end: fixture files written here and bundled real images, read back through tfds."""
import json
import os
import signal
import subprocess
import sys
import textwrap

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from datasets.attributes import CELEBA_ATTRIBUTES, LFW_ATTRIBUTES
from datasets.build import SUMMARY_FILE
from datasets.builders import prepare_dataset
from datasets.imageio import ImageSpec, decode_png, prepare_file
from datasets.pipeline import open_source
from tests.test_datasets_attributes import celeba_attr_text, lfw_attr_text

R = 16


def _rgb(h, w, seed):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _by_name(src) -> dict:
    return {ex["filename"].decode(): ex for ex in (src[i] for i in range(len(src)))}


@pytest.fixture(scope="module")
def folder_build(tmp_path_factory):
    """A folder with 6 exact-size RGB PNGs (in a sub-folder too) plus bad files; built at 16 px."""
    src = tmp_path_factory.mktemp("folder_src")
    (src / "sub").mkdir()
    images = {f"{'sub/' if i % 2 else ''}img{i}.png": _rgb(R, R, i) for i in range(6)}
    for name, a in images.items():
        Image.fromarray(a).save(src / name)
    Image.fromarray(_rgb(R, R, 9)[..., 0]).save(src / "grey.png")
    Image.fromarray(_rgb(40, 20, 10)).save(src / "tall.png")
    (src / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    Image.fromarray(_rgb(4, 4, 11)).save(src / "tiny.png")
    out = tmp_path_factory.mktemp("built") / "folder16"
    summary = prepare_dataset("folder", out, src=src, resolution=R, progress=False)
    return src, out, images, summary


def test_folder_read_back_equals_input(folder_build):
    src, out, images, summary = folder_build
    ds = open_source(out, "train")
    got = _by_name(ds)
    assert set(got) == set(images) | {"grey.png", "tall.png"}
    for name, a in images.items():
        np.testing.assert_array_equal(got[name]["image"], a)          # exact: PNG is lossless, no resampling
    # Converted files equal the single-file preparation of the same file.
    for name in ("grey.png", "tall.png"):
        np.testing.assert_array_equal(got[name]["image"], decode_png(prepare_file(name, src / name,
                                                                                  ImageSpec(R)).png))


def test_folder_summary_counts_and_is_saved(folder_build):
    _, out, _, summary = folder_build
    assert summary.kept == {"train": 8}
    assert summary.converted_images == 2
    assert summary.converted == {"grayscale->RGB": 1, "cropped non-square": 1}
    assert summary.skipped == {"unreadable (corrupt or truncated)": 1, "too small (shorter side < 8 px)": 1}
    saved = json.loads((out / SUMMARY_FILE).read_text())
    assert saved["kept"] == {"train": 8} and saved["skipped"]["unreadable (corrupt or truncated)"] == 1
    text = summary.format()
    assert "kept      8" in text and "broken.jpg" in text


def test_bundled_real_images(tmp_path):
    """scikit-image's bundled photos (colour, grey, RGBA logo, non-square) as PNG/JPEG files."""
    from skimage import data
    photos = {"astronaut.png": data.astronaut(), "chelsea.jpg": data.chelsea(), "coffee.jpg": data.coffee(),
              "camera.png": data.camera(), "logo.png": data.logo()}
    for name, a in photos.items():
        Image.fromarray(a).save(tmp_path / name, quality=95)
    out = tmp_path / "real64"
    summary = prepare_dataset("folder", out, src=tmp_path, resolution=64, progress=False)
    assert summary.kept == {"train": 5} and not summary.skipped
    assert summary.converted == {"cropped non-square": 2, "grayscale->RGB": 1,
                                 "RGBA->RGB (alpha composited on white)": 1}
    got = _by_name(open_source(out))
    for name in photos:
        assert got[name]["image"].shape == (64, 64, 3)
        np.testing.assert_array_equal(got[name]["image"],
                                      decode_png(prepare_file(name, tmp_path / name, ImageSpec(64)).png))
    # The astronaut is square: its 64 px version is a plain downscale, close to a box-filtered reference.
    box = data.astronaut().reshape(64, 8, 64, 8, 3).mean(axis=(1, 3))
    assert np.abs(got["astronaut.png"]["image"].astype(float) - box).mean() < 6.0


def test_paired_builder(tmp_path):
    src = tmp_path / "selfie2anime"
    expected = {}
    for s, n in (("trainA", 3), ("trainB", 2), ("testA", 1), ("testB", 1)):
        (src / s).mkdir(parents=True)
        for i in range(n):
            a = _rgb(R, R, hash((s, i)) % 1000)
            Image.fromarray(a).save(src / s / f"{i}.png")
            expected[f"{s}/{i}.png"] = a
    out = tmp_path / "paired"
    summary = prepare_dataset("paired", out, src=src, resolution=R, progress=False)
    assert summary.kept == {"trainA": 3, "trainB": 2, "testA": 1, "testB": 1}
    for s in ("trainA", "trainB", "testA", "testB"):
        for name, ex in _by_name(open_source(out, s)).items():
            np.testing.assert_array_equal(ex["image"], expected[name])
    with pytest.raises(ValueError, match="has no split 'train'; it has trainA"):
        open_source(out, "train")
    with pytest.raises(ValueError, match="none of the subfolders trainA"):
        prepare_dataset("paired", tmp_path / "x", src=src / "trainA", resolution=R, progress=False)


def test_celeba_builder(tmp_path):
    src = tmp_path / "celeba"
    (src / "img_align_celeba").mkdir(parents=True)
    rng = np.random.default_rng(5)
    rows = {f"{i:06d}.jpg": list(rng.choice([-1, 1], 40)) for i in range(1, 6)}
    (src / "list_attr_celeba.txt").write_text(celeba_attr_text(rows), newline="")
    (src / "list_eval_partition.txt").write_text("".join(f"{n} {s}\n" for n, s in zip(rows, [0, 0, 0, 1, 2])))
    for i, name in enumerate(list(rows)[:-1]):      # the last listed image is missing on disk
        Image.fromarray(_rgb(218, 178, i)).save(src / "img_align_celeba" / name, quality=95)
    out = tmp_path / "celeba32"
    summary = prepare_dataset("celeba", out, src=src, resolution=32, progress=False)
    assert summary.kept == {"train": 3, "validation": 1}
    assert summary.skipped == {"listed in the attribute file but the image is missing": 1}
    assert summary.converted == {"cropped non-square": 4}
    train = open_source(out, "train")
    for name, ex in _by_name(train).items():
        np.testing.assert_array_equal(ex["attributes"], np.array(rows[name]) > 0)
        assert ex["image"].shape == (32, 32, 3)
    import tensorflow_datasets as tfds
    assert tfds.builder_from_directory(str(out)).info.metadata["attribute_names"] == list(CELEBA_ATTRIBUTES)


def test_lfw_builder(tmp_path):
    src = tmp_path / "lfwsrc"
    rng = np.random.default_rng(6)
    rows = [("Ann Example", 1, list(rng.normal(size=73))), ("Bo Test", 3, list(rng.normal(size=73)))]
    (src / "lfw" / "Ann_Example").mkdir(parents=True)
    (src / "lfw" / "Bo_Test").mkdir()
    (src / "lfw_attributes.txt").write_text(lfw_attr_text(rows))
    frames = {}
    for person, num, _ in rows:
        a = _rgb(250, 250, num)
        frames[person] = a
        Image.fromarray(a).save(src / "lfw" / person.replace(" ", "_") / f"{person.replace(' ', '_')}_{num:04d}.png")
    # LFW files are .jpg; keep .png content under the .jpg name so the read-back is exact.
    for p in (src / "lfw").rglob("*.png"):
        p.rename(p.with_suffix(".jpg"))
    out = tmp_path / "lfw"
    summary = prepare_dataset("lfw", out, src=src, resolution=32, crop_fraction=0.5, progress=False)
    assert summary.kept == {"train": 2}
    got = _by_name(open_source(out))
    ex = got["Bo_Test/Bo_Test_0003.jpg"]
    assert ex["person"] == b"Bo Test" and ex["imagenum"] == 3
    np.testing.assert_allclose(ex["attributes"], rows[1][2], atol=1e-6)
    # crop_fraction 0.5 keeps the central 125 px of the 250 px frame.
    centre = Image.fromarray(frames["Bo Test"]).resize((32, 32), Image.Resampling.LANCZOS, box=(62.5, 62.5, 187.5, 187.5))
    np.testing.assert_array_equal(ex["image"], np.asarray(centre))
    import tensorflow_datasets as tfds
    assert tfds.builder_from_directory(str(out)).info.metadata["attribute_names"] == list(LFW_ATTRIBUTES)


def test_demo_builder_matches_in_memory_api(tmp_path):
    from datasets.demo import load_demo_domains
    out = tmp_path / "demo"
    summary = prepare_dataset("demo", out, resolution=16, variants=2, progress=False)
    assert summary.kept == {"trainA": 200, "trainB": 200, "testA": 1, "testB": 1}
    a, b, photo = load_demo_domains(16, variants=2)
    for split, arr in (("trainA", a), ("trainB", b)):
        src = open_source(out, split)
        got = np.stack([src[i]["image"] for i in range(len(src))])
        np.testing.assert_array_equal(got, arr)                   # keys sort in generation order
    np.testing.assert_array_equal(open_source(out, "testA")[0]["image"], photo)


def test_existing_output_and_overwrite(folder_build, tmp_path):
    src, out, images, _ = folder_build
    with pytest.raises(FileExistsError, match="already exists"):
        prepare_dataset("folder", out, src=src, resolution=R, progress=False)
    plain = tmp_path / "plain"
    plain.mkdir()
    with pytest.raises(FileExistsError, match="not a built dataset"):
        prepare_dataset("folder", plain, src=src, resolution=R, overwrite=True, progress=False)
    copy = tmp_path / "copy"
    prepare_dataset("folder", copy, src=src, resolution=R, progress=False)
    prepare_dataset("folder", copy, src=src, resolution=R // 2, overwrite=True, progress=False)
    assert open_source(copy)[0]["image"].shape == (R // 2, R // 2, 3)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["copy", "plain"]     # no temp or old folders left


def test_folder_without_usable_images_is_a_clear_error(tmp_path):
    src = tmp_path / "bad"
    src.mkdir()
    (src / "a.jpg").write_bytes(b"not a jpeg")
    (src / "b.txt").write_text("notes")
    with pytest.raises(ValueError, match=r"no usable images for split 'train' \(2 files: 1 unreadable .*1 not an image"):
        prepare_dataset("folder", tmp_path / "out", src=src, resolution=R, progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad"]


def test_interrupted_build_leaves_no_dataset(tmp_path, monkeypatch):
    import datasets.build as build
    src = tmp_path / "src"
    src.mkdir()
    for i in range(5):
        Image.fromarray(_rgb(R, R, i)).save(src / f"{i}.png")
    calls = []

    def flaky(job, *args):
        calls.append(job.key)
        if len(calls) == 3:
            raise KeyboardInterrupt                                  # as if Ctrl-C hit mid-build
        return real(job, *args)

    real = build.prepare_job
    monkeypatch.setattr(build, "prepare_job", flaky)
    with pytest.raises(KeyboardInterrupt):
        prepare_dataset("folder", tmp_path / "out", src=src, resolution=R, progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src"]


def test_killed_build_leaves_no_dataset_and_next_build_cleans_up(tmp_path):
    """SIGKILL a build in a subprocess while it writes: no `out`, only a hidden temp dir, removed by the next build."""
    src = tmp_path / "src"
    src.mkdir()
    for i in range(4):
        Image.fromarray(_rgb(R, R, i)).save(src / f"{i}.png")
    out = tmp_path / "out"
    script = textwrap.dedent(f"""
        import time, datasets.build as build
        real = build.prepare_job
        def slow(job, *a):
            if job.key == "2.png":
                print("WAITING", flush=True); time.sleep(60)
            return real(job, *a)
        build.prepare_job = slow
        from datasets.builders import prepare_dataset
        prepare_dataset("folder", {str(out)!r}, src={str(src)!r}, resolution={R}, progress=False)
    """)
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, env=env, text=True)
    try:
        assert proc.stdout.readline().strip() == "WAITING"
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=60)
        proc.stdout.close()
    assert not out.exists()
    leftovers = sorted(p.name for p in tmp_path.iterdir() if p.name != "src")
    assert len(leftovers) == 2 and leftovers[0].startswith(".out.incomplete-") and leftovers[1] == ".out.lock"
    prepare_dataset("folder", out, src=src, resolution=R, progress=False)     # takes the dead build's lock over
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "src"]
    assert len(open_source(out)) == 4


def test_cli_prepare_data(tmp_path, capsys):
    from nets.cli import main
    assert main(["prepare-data", "demo", "--out", str(tmp_path / "d"), "--resolution", "8", "--variants", "1",
                 "--quiet"]) == 0
    assert "kept      202 (trainA 100, trainB 100, testA 1, testB 1)" in capsys.readouterr().out
    assert main(["prepare-data", "folder", str(tmp_path / "nope"), "--out", str(tmp_path / "x")]) == 2
    assert f"image folder {tmp_path / 'nope'} does not exist" in capsys.readouterr().err
    assert main(["prepare-data", "celeba", "--out", str(tmp_path / "y")]) == 2
    assert "needs a source folder" in capsys.readouterr().err


def test_cli_folder_sketch_size_is_built_and_recorded(folder_build, tmp_path, capsys):
    """`--sketch --sketch-size 32` on the 16 px folder fixture: sketches at the image size, work size in metadata."""
    import tensorflow_datasets as tfds
    from datasets.sketch import rough_sketch
    from nets.cli import main
    src, _, images, _ = folder_build
    out = tmp_path / "sketch16"
    assert main(["prepare-data", "folder", str(src), "--out", str(out), "--resolution", str(R), "--sketch",
                 "--sketch-size", "32", "--quiet"]) == 0
    assert "sketches  8 computed, 0 from cache" in capsys.readouterr().out
    meta = tfds.builder_from_directory(str(out)).info.metadata
    assert meta["sketch"] is True and meta["sketch_size"] == 32
    got = _by_name(open_source(out))
    assert len(got) == 8
    for ex in got.values():
        assert ex["sketch"].shape == ex["image"].shape == (R, R, 3)
        np.testing.assert_array_equal(ex["sketch"], rough_sketch(ex["image"], 32))     # not the 256 default
    assert not any(p.name.endswith("sketch-cache") for p in tmp_path.iterdir())        # own cache removed
    # Bad sizes are refused before anything is written.
    assert main(["prepare-data", "folder", str(src), "--out", str(tmp_path / "x"), "--sketch",
                 "--sketch-size", "8"]) == 2
    assert "rough sketch work size must be an int >= 16; got 8" in capsys.readouterr().err
    assert main(["prepare-data", "folder", str(src), "--out", str(tmp_path / "y"), "--sketch-size", "32"]) == 2
    assert "--sketch-size sets the work size of --sketch rough sketches; add --sketch" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sketch16"]
