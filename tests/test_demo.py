"""`gafu demo` (the README's main job) in a reduced form; the full-length run is in the slow tier."""
import re

import pytest
from PIL import Image

from nets.cli import main

IMAGES = ("domains.png", "samples.png", "blend.png", "toonify.png")


def _check_report(out):
    text = (out / "report.md").read_text()
    assert re.findall(r"!\[([^\]]+)\]", text) == list(IMAGES)
    for name in IMAGES:
        with Image.open(out / name) as im:
            assert im.mode == "RGB" and min(im.size) >= 32
    with Image.open(out / "blend.png") as im:     # rows: A, r = 8, 16, 32, B; 8 seeds: 34 px per 32 px cell
        assert im.size == (2 + 8 * 34, 2 + 5 * 34)
    with Image.open(out / "toonify.png") as im:   # target | projection | toon
        assert im.size == (2 + 3 * 34, 2 + 34)
    assert (out / "train_A" / "ema" / "gafu.json").is_file() and (out / "train_B" / "ema" / "gafu.json").is_file()
    return text


def test_demo_pipeline_reduced(tmp_path):
    out = tmp_path / "demo"
    args = ["demo", "--out", str(out), "--steps-a", "2", "--steps-b", "2", "--project-steps", "2"]
    assert main(args) == 0
    text = _check_report(out)
    assert "A after 2 steps" in text and "(2 steps, LPIPS" in text
    assert main(args) == 2                      # an existing demo is not overwritten silently


@pytest.mark.slow
def test_demo_full(tmp_path):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out)]) == 0
    _check_report(out)
