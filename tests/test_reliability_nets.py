"""Reliability of the commands on hostile but realistic input (issue 14, rows 2, 4 and 5 in nets/ and interp/).

Model files that are damaged (a flipped byte, a truncated data file) or hold NaN are refused with one line naming
the folder and the array; NaN flags stop at parse time; a decompression bomb is one line; an output path that
cannot be written fails before any compute; killed saves' temp folders are swept; commits are fsynced.
"""
import glob
import json
import os
import re
import struct
import time
import zlib
from pathlib import Path

import jax
import numpy as np
import pytest
from PIL import Image

from interp import feature_files
from nets import cli, convert, images, modelfile, registry, sampling
from nets.stylegan2 import init_generator, preset

CFG = preset("tiny")


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("rel")
    for i in (0, 1):
        modelfile.save_model(d / f"m{i}", {"G": init_generator(CFG, jax.random.key(i))}, CFG)
    Image.fromarray(np.full((16, 16, 3), 100, np.uint8)).save(d / "photo.png")
    (d / "plain").write_text("a regular file")
    return d


def run(capsys, *argv) -> tuple[int, str]:
    rc = cli.main([str(a) for a in argv])
    return rc, capsys.readouterr().err


def one_line(err: str, cmd: str) -> str:
    assert err.startswith(f"gafu {cmd}: error: ") and err.count("\n") == 1, err
    return err


def copy_model(src, dst):
    import shutil
    shutil.copytree(src, dst)
    return dst


def data_files(model) -> list[str]:
    """The model's orbax/TensorStore data files, largest first."""
    return sorted(glob.glob(str(model / "variables" / "**" / "d" / "*"), recursive=True),
                  key=lambda f: -os.path.getsize(f))


def no_temps(folder, name: str) -> bool:
    return not [p for p in os.listdir(folder) if p.startswith(f".{name}.")]


# -- row 2: checksums, non-finite weights, NaN flags --------------------------------------------------------------
def test_flipped_byte_in_a_data_file_is_refused_naming_the_array(files, tmp_path, capsys):
    """A flip inside zstd-compressed array data decodes to wrong numbers (the checksum catches them); one that
    hits a frame header fails to decode (a read error). Either way the file never loads, and the error names it
    and the array."""
    messages = {}
    for k in range(6):
        bad = copy_model(files / "m0", tmp_path / f"flip{k}")
        f = Path(data_files(bad)[0])
        data = bytearray(f.read_bytes())
        data[len(data) // 2 + 613 * k] ^= 0x01
        f.write_bytes(bytes(data))
        with pytest.raises(modelfile.ModelFileError) as e:
            modelfile.load_model(bad)
        messages[bad] = str(e.value)
        assert re.search(rf"model file {re.escape(str(bad))}:? .*array G/params/\S+", str(e.value)), e.value
    flipped = [m for m, msg in messages.items() if re.search(r"array G/params/\S+ does not match its checksum "
                                                              r"in gafu.json \(content differs\)", msg)]
    assert flipped, messages
    rc, err = run(capsys, "blend", flipped[0], files / "m1", "--out", tmp_path / "out", "--swap", 8)
    assert rc == 2 and re.search(rf"{flipped[0].name}: array G/params/\S+ does not match its checksum",
                                 one_line(err, "blend"))
    assert not (tmp_path / "out").exists() and no_temps(tmp_path, "out")


def test_model_files_without_checksums_still_load_and_listed_arrays_must_exist(files, tmp_path):
    old = copy_model(files / "m0", tmp_path / "old")
    hdr = json.loads((old / "gafu.json").read_text())
    sums = hdr.pop("checksums")
    (old / "gafu.json").write_text(json.dumps(hdr))                       # as written before checksums existed
    got = modelfile.flat_arrays(modelfile.load_model(old).variables)
    assert sorted(got) == sorted(sums) and all(modelfile.checksum(a) == sums[k] for k, a in got.items())
    hdr["checksums"] = {**sums, "G/params/extra/weight": {"sha256": "0" * 64, "shape": [1], "dtype": "float32"}}
    (old / "gafu.json").write_text(json.dumps(hdr))
    with pytest.raises(modelfile.ModelFileError, match=r"old: array G/params/extra/weight is listed in gafu.json "
                                                       r"but missing from variables/"):
        modelfile.load_model(old)


def test_non_finite_weights_are_refused_on_save_and_on_load(files, tmp_path, capsys, monkeypatch):
    g = jax.tree.map(np.array, modelfile.load_model(files / "m0").variables["G"])
    g["params"]["mapping"]["fc1"]["kernel"][0, :3] = [np.nan, np.inf, 1.0]
    with pytest.raises(modelfile.ModelFileError, match=r"model file .*nan: array G/params/mapping/fc1/kernel holds "
                                                       r"2 non-finite value\(s\)"):
        modelfile.save_model(tmp_path / "nan", {"G": g}, CFG)
    assert not (tmp_path / "nan").exists() and no_temps(tmp_path, "nan")
    with monkeypatch.context() as m:                 # such a file from elsewhere (or an older gafu)
        m.setattr(modelfile, "check_finite", lambda *a: None)
        modelfile.save_model(tmp_path / "nan", {"G": g}, CFG)
    rc, err = run(capsys, "sample", "--model", tmp_path / "nan", "--out", tmp_path / "s.png")
    assert rc == 2 and "nan: array G/params/mapping/fc1/kernel holds 2 non-finite" in one_line(err, "sample")
    assert not (tmp_path / "s.png").exists()


@pytest.mark.parametrize("flag, value, message", [
    ("--alpha", "nan", "argument --alpha: must be a finite number; got 'nan'"),
    ("--alpha", "inf", "argument --alpha: must be a finite number; got 'inf'"),
    ("--blend-width", "nan", "argument --blend-width: must be a finite number; got 'nan'"),
])
def test_nan_flags_stop_at_parse_time(files, tmp_path, capsys, flag, value, message):
    argv = ["blend", files / "m0", files / "m1", "--out", tmp_path / "out", flag, value]
    if flag != "--alpha":
        argv += ["--swap", 8]
    with pytest.raises(SystemExit) as e:
        cli.main([str(a) for a in argv])
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.count("\n") == 1 and err.startswith("gafu blend: error: ") and message in err
    assert not (tmp_path / "out").exists()


def test_nan_schedule_is_refused_before_anything_is_read(tmp_path, capsys):
    rc, err = run(capsys, "blend", tmp_path / "nope0", tmp_path / "nope1", "--out", tmp_path / "out",
                  "--schedule", "4=0,16=inf")
    assert rc == 2 and "--schedule entry '16=inf': the share must be a finite number" in one_line(err, "blend")


# -- row 4: one reader for user images, one-line errors, outputs checked first ------------------------------------
def png_claiming(width: int, height: int) -> bytes:
    """A few bytes of PNG whose header claims width x height (the data never comes)."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b""))


def test_decompression_bomb_is_one_line_naming_the_file_and_its_size(files, tmp_path, capsys):
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(png_claiming(20000, 9800))                        # 196 megapixels: Pillow's hard stop
    with pytest.raises(images.ImageError, match=r"photo .*bomb.png is 196.0 megapixels, above the limit of "
                                                r"89.5 megapixels"):
        images.read_rgb(bomb, "photo")
    mid = tmp_path / "mid.png"
    mid.write_bytes(png_claiming(10000, 9000))                         # 90 MP: Pillow only warns
    with pytest.raises(images.ImageError, match=r"mid.png is 10000x9000 \(90.0 megapixels\), above the limit"):
        images.read_rgb(mid)
    with pytest.raises(images.ImageError, match=r"photo.png is 16x16 \(256 pixels\), above the limit of 100 "
                                                r"pixels \(a guard against decompression bombs\)"):
        images.read_rgb(files / "photo.png", max_pixels=100)
    assert images.read_rgb(files / "photo.png", max_pixels=256).shape == (16, 16, 3)
    rc, err = run(capsys, "toonify", bomb, "--base", files / "m0", "--blended", files / "m1",
                  "--out", tmp_path / "t.png")
    assert rc == 2 and re.search(r"photo .*bomb.png is 196.0 megapixels", one_line(err, "toonify"))
    assert not (tmp_path / "t.png").exists() and not (tmp_path / "t_w.npz").exists()


def test_truncated_data_file_is_one_line_naming_the_model_and_array(files, tmp_path, capsys):
    for which, kind in ((slice(0, 1), "Exception"), (slice(None), "ValueError")):   # the array data; every file
        bad = copy_model(files / "m0", tmp_path / f"cut{kind}")
        for f in data_files(bad)[which]:
            os.truncate(f, os.path.getsize(f) // 2)
        rc, err = run(capsys, "sample", "--model", bad, "--out", tmp_path / "s.png")
        assert rc == 2 and "Exception ignored" not in err and "WARNING" not in err
        assert re.search(rf"cannot read the variables of model file .*cut{kind} \(array G/\S+\): {kind}: .*"
                         rf"the file is damaged or incomplete", one_line(err, "sample"))
        assert not (tmp_path / "s.png").exists()


def test_debug_shows_the_traceback_and_bugs_are_not_hidden(tmp_path, capsys, monkeypatch):
    with pytest.raises(modelfile.ModelFileError, match="does not exist"):
        cli.main(["--debug", "sample", "--model", str(tmp_path / "none")])
    monkeypatch.setenv("GAFU_DEBUG", "1")
    with pytest.raises(modelfile.ModelFileError):
        cli.main(["sample", "--model", str(tmp_path / "none")])
    monkeypatch.delenv("GAFU_DEBUG")
    assert run(capsys, "sample", "--model", tmp_path / "none")[0] == 2
    monkeypatch.setattr(sampling, "sample_grid", lambda **kw: [][0])             # a bug, not the user's input
    with pytest.raises(IndexError):
        cli.main(["sample", "--out", str(tmp_path / "s.png")])
    spec = Exception("Encountered error while reading array index: (slice(0, 5, 1),). See full TensorStore "
                     "details: <bound method ... of TensorStore({\n  'base': {...}\n})>.")
    assert cli.is_user_error(spec) and cli.error_line(spec) == ("Exception: Encountered error while reading array "
                                                                "index: (slice(0, 5, 1),)")
    assert not cli.is_user_error(RuntimeError("a bug")) and not cli.is_user_error(KeyError("x"))


def _explode(*a, **k):
    raise AssertionError("the work started before the output path was checked")


@pytest.mark.parametrize("cmd", ["sample", "blend", "project", "toonify", "convert", "export", "stylize"])
def test_out_under_a_regular_file_fails_before_any_compute(files, tmp_path, capsys, monkeypatch, cmd):
    for module, name in [(registry, "load"), (registry, "load_generator"), (sampling, "sample_grid"),
                         (convert, "read_checkpoint"), (feature_files, "vgg_params"), (images, "read_rgb")]:
        monkeypatch.setattr(module, name, _explode)
    out = files / "plain" / "sub" / "x"
    m0, m1, photo = files / "m0", files / "m1", files / "photo.png"
    argv = {"sample": ["--out", f"{out}.png"], "blend": [m0, m1, "--out", out, "--swap", 8],
            "project": [photo, "--model", m0, "--out-dir", out],
            "toonify": [photo, "--base", m0, "--blended", m1, "--out", f"{out}.png"],
            "convert": [photo, "--out", out], "export": [m0, "--out", f"{out}.npz"],
            "stylize": [photo, photo, "--out", f"{out}.png"]}[cmd]
    rc, err = run(capsys, cmd, *argv)
    assert rc == 2 and f"{files / 'plain'} is a regular file, not a folder" in one_line(err, cmd)


def test_dfi_checks_every_output_before_any_compute(files, tmp_path, monkeypatch):
    from interp import dfi

    monkeypatch.setattr(feature_files, "vgg_params", _explode)
    monkeypatch.setattr(feature_files, "load_face", _explode)
    table = feature_files.AttributeRows("lfw", ["Smiling"], ["a/a_0001.jpg"], np.zeros((1, 1), np.float32))
    cfg = dfi.PRESETS["authors"].replace(alphas=(0.2, 0.4))
    (tmp_path / "x_a0.4.png").mkdir()                               # the second of two outputs cannot be a file
    with pytest.raises(IsADirectoryError, match=r"x_a0.4.png exists and is a folder"):
        feature_files.dfi_files(str(files / "photo.png"), table, str(tmp_path), str(tmp_path / "x.png"), cfg,
                                attributes=["Smiling"])


def test_check_output(tmp_path):
    (tmp_path / "f").write_text("x")
    assert images.check_output(tmp_path / "new" / "deeper" / "a.png") == tmp_path / "new" / "deeper" / "a.png"
    assert not (tmp_path / "new").exists()                                    # creates nothing
    with pytest.raises(FileExistsError, match=r"f already exists \(pass --overwrite"):
        images.check_output(tmp_path / "f", overwrite=False)
    with pytest.raises(NotADirectoryError, match=r"f exists and is not a folder"):
        images.check_output(tmp_path / "f", folder=True)
    with pytest.raises(NotADirectoryError, match=r"cannot write .*f/a/b.png: .*f is a regular file"):
        images.check_output(tmp_path / "f" / "a" / "b.png")


def test_save_model_never_replaces_a_folder_that_is_not_a_model_file(tmp_path):
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "me.jpg").write_bytes(b"precious")
    with pytest.raises(modelfile.ModelFileError, match="photos exists and is not a gafu model file; refusing"):
        modelfile.save_model(tmp_path / "photos", {"G": {"w": np.ones(2, np.float32)}}, {}, overwrite=True)
    assert (tmp_path / "photos" / "me.jpg").read_bytes() == b"precious"


# -- row 5: killed saves' temp folders swept, commits fsynced ----------------------------------------------------
def _age(path, seconds: float) -> None:
    t = time.time() - seconds
    for d, dirs, fs in os.walk(path):
        for n in dirs + fs:
            os.utime(os.path.join(d, n), (t, t))
    os.utime(path, (t, t))


def test_next_save_sweeps_stale_temp_folders_of_that_model_file_only(files, tmp_path, monkeypatch):
    tree = {"G": {"w": np.ones(3, np.float32)}}
    for name in (".ema.tmp-0123abcd", ".ema.old-89abcdef", ".ema.tmp-fedcba98", ".emb.tmp-00000000",
                 ".ema.tmp-notmine"):
        (tmp_path / name / "variables").mkdir(parents=True)
    for name in (".ema.tmp-0123abcd", ".ema.old-89abcdef", ".emb.tmp-00000000", ".ema.tmp-notmine"):
        _age(tmp_path / name, modelfile.STALE_AFTER_S + 60)              # killed writers: untouched for long
    synced = []
    monkeypatch.setattr(modelfile, "fsync_dir", lambda d: synced.append((str(d), (tmp_path / "ema").is_dir())))
    modelfile.save_model(tmp_path / "ema", tree, {})
    left = sorted(p.name for p in tmp_path.iterdir())
    assert left == [".ema.tmp-fedcba98", ".ema.tmp-notmine", ".emb.tmp-00000000", "ema"]  # a live writer's stays
    assert (str(tmp_path), True) in synced                               # the parent, after the rename
    modelfile.save_model(tmp_path / "ema", tree, {}, overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == left
