"""Readers for the face-attribute files DFI uses: CelebA's `list_attr_celeba.txt` / `list_eval_partition.txt` and
LFW's `lfw_attributes.txt` (Kumar et al., "Attribute and Simile Classifiers for Face Verification", ICCV 2009).

Errors name the file, the line number and what was wrong, so a damaged download is easy to find.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

CELEBA_ATTRIBUTES = (
    "5_o_Clock_Shadow", "Arched_Eyebrows", "Attractive", "Bags_Under_Eyes", "Bald", "Bangs", "Big_Lips", "Big_Nose",
    "Black_Hair", "Blond_Hair", "Blurry", "Brown_Hair", "Bushy_Eyebrows", "Chubby", "Double_Chin", "Eyeglasses",
    "Goatee", "Gray_Hair", "Heavy_Makeup", "High_Cheekbones", "Male", "Mouth_Slightly_Open", "Mustache",
    "Narrow_Eyes", "No_Beard", "Oval_Face", "Pale_Skin", "Pointy_Nose", "Receding_Hairline", "Rosy_Cheeks",
    "Sideburns", "Smiling", "Straight_Hair", "Wavy_Hair", "Wearing_Earrings", "Wearing_Hat", "Wearing_Lipstick",
    "Wearing_Necklace", "Wearing_Necktie", "Young")

LFW_ATTRIBUTES = (
    "Male", "Asian", "White", "Black", "Baby", "Child", "Youth", "Middle Aged", "Senior", "Black Hair", "Blond Hair",
    "Brown Hair", "Bald", "No Eyewear", "Eyeglasses", "Sunglasses", "Mustache", "Smiling", "Frowning", "Chubby",
    "Blurry", "Harsh Lighting", "Flash", "Soft Lighting", "Outdoor", "Curly Hair", "Wavy Hair", "Straight Hair",
    "Receding Hairline", "Bangs", "Sideburns", "Fully Visible Forehead", "Partially Visible Forehead",
    "Obstructed Forehead", "Bushy Eyebrows", "Arched Eyebrows", "Narrow Eyes", "Eyes Open", "Big Nose", "Pointy Nose",
    "Big Lips", "Mouth Closed", "Mouth Slightly Open", "Mouth Wide Open", "Teeth Not Visible", "No Beard", "Goatee",
    "Round Jaw", "Double Chin", "Wearing Hat", "Oval Face", "Square Face", "Round Face", "Color Photo", "Posed Photo",
    "Attractive Man", "Attractive Woman", "Indian", "Gray Hair", "Bags Under Eyes", "Heavy Makeup", "Rosy Cheeks",
    "Shiny Skin", "Pale Skin", "5 o' Clock Shadow", "Strong Nose-Mouth Lines", "Wearing Lipstick", "Flushed Face",
    "High Cheekbones", "Brown Eyes", "Wearing Earrings", "Wearing Necktie", "Wearing Necklace")

CELEBA_SPLITS = {0: "train", 1: "validation", 2: "test"}


@dataclasses.dataclass(frozen=True)
class AttributeTable:
    """One row per image: `files[i]` (path relative to the image folder) has attribute vector `values[i]`."""
    names: tuple[str, ...]
    files: tuple[str, ...]
    values: np.ndarray                      # [N, len(names)]: bool (CelebA) or float32 (LFW decision values)

    def __len__(self) -> int:
        return len(self.files)

    def column(self, name: str) -> np.ndarray:
        if name not in self.names:
            raise KeyError(f"no attribute {name!r}; known: {', '.join(self.names)}")
        return self.values[:, self.names.index(name)]


def _lines(path: str | Path) -> list[str]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"attribute file {path} does not exist")
    return path.read_text(encoding="utf-8", errors="strict").splitlines()


def read_celeba_attributes(path: str | Path) -> AttributeTable:
    """`list_attr_celeba.txt`: count line, 40 names, then `000001.jpg  -1  1 ...` rows (values in {1, -1})."""
    lines = [ln for ln in _lines(path)]
    while lines and not lines[-1].strip():
        lines.pop()
    if len(lines) < 2:
        raise ValueError(f"{path}: expected a count line and a header line; the file has {len(lines)} lines")
    try:
        count = int(lines[0].strip())
    except ValueError:
        raise ValueError(f"{path}:1: expected the number of images, got {lines[0].strip()[:40]!r}") from None
    names = tuple(lines[1].split())
    if len(set(names)) != len(names) or not names:
        raise ValueError(f"{path}:2: bad attribute header {lines[1][:60]!r}")
    files, rows = [], []
    for n, line in enumerate(lines[2:], start=3):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != len(names) + 1:
            raise ValueError(f"{path}:{n}: expected a file name and {len(names)} values; got {len(parts)} fields")
        try:
            vals = [int(v) for v in parts[1:]]
        except ValueError:
            raise ValueError(f"{path}:{n}: non-integer attribute value in {line[:60]!r}") from None
        if any(v not in (1, -1) for v in vals):
            raise ValueError(f"{path}:{n}: attribute values must be 1 or -1; got {sorted(set(vals))}")
        files.append(parts[0])
        rows.append(vals)
    if len(files) != count:
        raise ValueError(f"{path}: line 1 announces {count} images but {len(files)} rows follow")
    if len(set(files)) != len(files):
        raise ValueError(f"{path}: duplicate image names")
    values = np.asarray(rows, dtype=np.int8).reshape(len(files), len(names)) > 0     # [N, 40] bool
    return AttributeTable(names, tuple(files), values)


def read_celeba_partition(path: str | Path) -> dict[str, str]:
    """`list_eval_partition.txt`: `000001.jpg 0` rows -> {file: 'train' | 'validation' | 'test'}."""
    out: dict[str, str] = {}
    for n, line in enumerate(_lines(path), start=1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 2 or parts[1] not in ("0", "1", "2"):
            raise ValueError(f"{path}:{n}: expected '<file> <0|1|2>'; got {line[:60]!r}")
        out[parts[0]] = CELEBA_SPLITS[int(parts[1])]
    return out


def lfw_image_path(person: str, imagenum: int) -> str:
    """'Aaron Eckhart', 1 -> 'Aaron_Eckhart/Aaron_Eckhart_0001.jpg' (the LFW folder layout)."""
    name = person.strip().replace(" ", "_")
    return f"{name}/{name}_{imagenum:04d}.jpg"


def read_lfw_attributes(path: str | Path) -> AttributeTable:
    """`lfw_attributes.txt`: tab-separated; a comment line, the header `#, person, imagenum, <73 names>`, then
    `<person>\\t<imagenum>\\t<73 floats>` rows. Values are classifier decision values (> 0: has it)."""
    lines = _lines(path)
    header_at = next((i for i, ln in enumerate(lines) if ln.split("\t")[:3] == ["#", "person", "imagenum"]), None)
    if header_at is None:
        raise ValueError(f"{path}: no header line starting with '#<TAB>person<TAB>imagenum'")
    names = tuple(s.strip() for s in lines[header_at].split("\t")[3:])
    if not names or len(set(names)) != len(names):
        raise ValueError(f"{path}:{header_at + 1}: bad attribute header")
    files, rows = [], []
    for n, line in enumerate(lines[header_at + 1:], start=header_at + 2):
        if not line.strip() or line.startswith("#"):
            continue
        parts = line.rstrip("\n").split("\t")
        if len(parts) != len(names) + 2:
            raise ValueError(f"{path}:{n}: expected person, imagenum and {len(names)} values (tab-separated); "
                             f"got {len(parts)} fields")
        try:
            num = int(parts[1])
            vals = [float(v) for v in parts[2:]]
        except ValueError:
            raise ValueError(f"{path}:{n}: bad number in {line[:60]!r}") from None
        files.append(lfw_image_path(parts[0], num))
        rows.append(vals)
    if not files:
        raise ValueError(f"{path}: no attribute rows after the header")
    if len(set(files)) != len(files):
        raise ValueError(f"{path}: duplicate (person, imagenum) rows")
    return AttributeTable(names, tuple(files), np.asarray(rows, dtype=np.float32).reshape(len(files), len(names)))


def read_attribute_file(path: str | Path) -> tuple[str, AttributeTable]:
    """LFW's `lfw_attributes.txt` or CelebA's `list_attr_celeba.txt`, told apart by LFW's leading comment line ->
    ("lfw" | "celeba", its table with float32 values: LFW's decision values, CelebA's booleans as +1/-1)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"attribute file {path} does not exist")
    with open(path, encoding="utf-8", errors="replace") as f:
        lfw = f.readline().lstrip().startswith("#")
    if lfw:
        t = read_lfw_attributes(path)
        return "lfw", dataclasses.replace(t, values=np.asarray(t.values, np.float32))
    t = read_celeba_attributes(path)
    return "celeba", dataclasses.replace(t, values=np.where(t.values, 1.0, -1.0).astype(np.float32))
