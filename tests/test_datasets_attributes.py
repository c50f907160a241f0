"""CelebA / LFW attribute files, written here in the exact published formats."""
import numpy as np
import pytest

from datasets.attributes import (CELEBA_ATTRIBUTES, LFW_ATTRIBUTES, lfw_image_path, read_celeba_attributes,
                                 read_celeba_partition, read_lfw_attributes)


def celeba_attr_text(rows: dict[str, list[int]]) -> str:
    """list_attr_celeba.txt layout: count, names (space separated, trailing space), then right-aligned columns."""
    lines = [str(len(rows)), " ".join(CELEBA_ATTRIBUTES) + " "]
    for name, vals in rows.items():
        lines.append(name + "".join(f"{v:3d}" for v in vals))
    return "\r\n".join(lines) + "\r\n"          # the original file has Windows line ends


def lfw_attr_text(rows: list[tuple[str, int, list[float]]]) -> str:
    lines = ["# This file contains the attribute values for all images in LFW",
             "\t".join(["#", "person", "imagenum", *LFW_ATTRIBUTES])]
    for person, num, vals in rows:
        lines.append("\t".join([person, str(num), *(f"{v:.6f}" for v in vals)]))
    return "\n".join(lines) + "\n"


def test_celeba_attributes_parse(tmp_path):
    rng = np.random.default_rng(0)
    rows = {f"{i:06d}.jpg": list(rng.choice([-1, 1], 40)) for i in range(1, 6)}
    path = tmp_path / "list_attr_celeba.txt"
    path.write_text(celeba_attr_text(rows), newline="")
    table = read_celeba_attributes(path)
    assert table.names == CELEBA_ATTRIBUTES and len(table.names) == 40
    assert table.files == tuple(rows)
    assert table.values.dtype == np.bool_ and table.values.shape == (5, 40)
    np.testing.assert_array_equal(table.values, np.array(list(rows.values())) > 0)
    np.testing.assert_array_equal(table.column("Smiling"), np.array([r[31] for r in rows.values()]) > 0)
    with pytest.raises(KeyError, match="no attribute 'Smile'"):
        table.column("Smile")


@pytest.mark.parametrize("mutate, message", [
    (lambda t: t.replace("5\r\n", "6\r\n", 1), "announces 6 images but 5 rows"),
    (lambda t: t.replace("000003.jpg", "000003.jpg  1", 1), r":5: expected a file name and 40 values; got 42"),
    (lambda t: t.replace("000002.jpg  1", "000002.jpg  0", 1).replace("000002.jpg -1", "000002.jpg  0", 1),
     r":4: attribute values must be 1 or -1"),
    (lambda t: "five\r\n" + t.split("\r\n", 1)[1], r":1: expected the number of images"),
])
def test_celeba_errors_name_file_and_line(tmp_path, mutate, message):
    rows = {f"{i:06d}.jpg": [1 if (i + j) % 2 else -1 for j in range(40)] for i in range(1, 6)}
    path = tmp_path / "list_attr_celeba.txt"
    path.write_text(mutate(celeba_attr_text(rows)), newline="")
    with pytest.raises(ValueError, match=message) as e:
        read_celeba_attributes(path)
    assert str(path) in str(e.value)


def test_celeba_partition(tmp_path):
    path = tmp_path / "list_eval_partition.txt"
    path.write_text("000001.jpg 0\n000002.jpg 1\n000003.jpg 2\n")
    assert read_celeba_partition(path) == {"000001.jpg": "train", "000002.jpg": "validation",
                                           "000003.jpg": "test"}
    path.write_text("000001.jpg 0\n000002.jpg 7\n")
    with pytest.raises(ValueError, match=r"list_eval_partition.txt:2:"):
        read_celeba_partition(path)
    with pytest.raises(FileNotFoundError):
        read_celeba_partition(tmp_path / "nope.txt")


def test_lfw_attributes_parse(tmp_path):
    rng = np.random.default_rng(1)
    rows = [("Aaron Eckhart", 1, list(rng.normal(size=73))), ("George W Bush", 12, list(rng.normal(size=73))),
            ("George W Bush", 530, list(rng.normal(size=73)))]
    path = tmp_path / "lfw_attributes.txt"
    path.write_text(lfw_attr_text(rows))
    table = read_lfw_attributes(path)
    assert table.names == LFW_ATTRIBUTES and len(table.names) == 73
    assert table.files == ("Aaron_Eckhart/Aaron_Eckhart_0001.jpg", "George_W_Bush/George_W_Bush_0012.jpg",
                           "George_W_Bush/George_W_Bush_0530.jpg")
    assert table.values.dtype == np.float32
    np.testing.assert_allclose(table.values, np.array([r[2] for r in rows]), atol=1e-6)
    np.testing.assert_allclose(table.column("5 o' Clock Shadow"), [r[2][64] for r in rows], atol=1e-6)


def test_lfw_errors(tmp_path):
    path = tmp_path / "lfw_attributes.txt"
    path.write_text("# comment\nperson\timagenum\tMale\n")
    with pytest.raises(ValueError, match="no header line"):
        read_lfw_attributes(path)
    text = lfw_attr_text([("A B", 1, [0.5] * 73)]) + "C D\t2\t" + "\t".join(["1.0"] * 72) + "\n"
    path.write_text(text)
    with pytest.raises(ValueError, match=r"lfw_attributes.txt:4: expected person, imagenum and 73 values"):
        read_lfw_attributes(path)


def test_lfw_image_path():
    assert lfw_image_path("Jennifer Lopez", 7) == "Jennifer_Lopez/Jennifer_Lopez_0007.jpg"
