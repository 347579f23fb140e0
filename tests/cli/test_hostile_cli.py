"""Hostile input against the command line: every row must end with exit status 1, one line on stderr that
says what is wrong, no traceback, and nothing new in the output folder."""

import json
import os
import zlib
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from filterscope.cli import app

runner = CliRunner()
T = ["--size", "32", "--scales", "2", "--steps", "2", "-q"]
R18 = ["-m", "resnet18", "-w", "random"]


def _files(tmp_path: Path) -> dict[str, Path]:
    """Hostile files, made fresh for each test."""
    files = {}
    (tmp_path / "a_file").write_text("not a folder")
    files["file"] = tmp_path / "a_file"
    photo = tmp_path / "photo.png"
    Image.new("RGB", (64, 48), "orange").save(photo)
    files["photo"] = photo
    (tmp_path / "text.png").write_text("this is text, not a PNG")
    files["text_png"] = tmp_path / "text.png"
    (tmp_path / "empty.png").write_bytes(b"")
    files["empty_png"] = tmp_path / "empty.png"
    files["truncated_png"] = tmp_path / "truncated.png"
    files["truncated_png"].write_bytes(photo.read_bytes()[:60])
    files["bomb_png"] = tmp_path / "bomb.png"
    _png_with_zip_bomb(files["bomb_png"])
    fifo = tmp_path / "x.jpg"
    os.mkfifo(fifo)
    files["fifo"] = fifo
    for name, content in {"half.json": {"size": 56.5}, "steps.json": {"steps": 20.0},
                          "transforms.json": {"transforms": "x"}, "pad.json": {"transforms": {"pad": "x"}},
                          "grey.json": {"noise_mean": "grey"}, "blur.json": {"blur": 5.0},
                          "no.json": {"decorrelate": "no"}, "tvnan.json": {"tv": float("nan")}}.items():
        (tmp_path / name).write_text(json.dumps(content))
        files[name] = tmp_path / name
    (tmp_path / "self.json").write_text(json.dumps({"base": str(tmp_path / "self.json")}))
    files["self.json"] = tmp_path / "self.json"
    (tmp_path / "deep.json").write_text("[" * 50000 + "]" * 50000)
    files["deep.json"] = tmp_path / "deep.json"
    (tmp_path / "number.json").write_text(json.dumps({"eye": 5}))
    files["regions_number"] = tmp_path / "number.json"
    (tmp_path / "object.json").write_text(json.dumps({"eye": [{"x": 1}]}))
    files["regions_object"] = tmp_path / "object.json"
    return files


def _png_with_zip_bomb(path: Path) -> None:
    """A valid PNG whose compressed text chunk inflates past Pillow's limit."""
    import io
    import struct

    buffer = io.BytesIO()
    Image.new("RGB", (4, 4)).save(buffer, format="PNG")
    data = buffer.getvalue()
    payload = b"comment\x00\x00" + zlib.compress(b"a" * (64 * 2**20), 9)
    chunk = struct.pack(">I", len(payload) - 0) + b"zTXt" + payload
    chunk += struct.pack(">I", zlib.crc32(b"zTXt" + payload) & 0xFFFFFFFF)
    path.write_bytes(data[:-12] + chunk + data[-12:])


CASES = [  # (id, arguments; "{name}" is replaced by the path of that hostile file, "{out}" by the output folder)
    ("lr nan", ["visualize", *R18, "-l", "layer1", "-f", "1", *T, "--lr", "nan"]),
    ("upscale nan", ["visualize", *R18, "-l", "layer1", "-f", "1", *T, "--upscale", "nan"]),
    ("late steps inf", ["visualize", *R18, "-l", "layer1", "-f", "1", *T, "--late-steps-factor", "inf"]),
    ("weight decay nan", ["visualize", *R18, "-l", "layer1", "-f", "1", *T, "--weight-decay", "nan"]),
    ("size 100000", ["visualize", *R18, "-l", "layer1", "-f", "1", "-q", "--size", "100000"]),
    ("scales 60", ["visualize", *R18, "-l", "layer1", "-f", "1", "-q", "--size", "56", "--scales", "60"]),
    ("blur wider than the image", ["visualize", *R18, "-l", "layer1", "-f", "1", "-q", "--size", "1",
                                   "--scales", "2"]),
    ("two billion filters", ["visualize", *R18, "-l", "layer1", "-f", "0-2000000000", *T]),
    ("filters 1,,2", ["visualize", *R18, "-l", "layer1", "-f", "1,,2", *T]),
    ("filters 1,2,", ["visualize", *R18, "-l", "layer1", "-f", "1,2,", *T]),
    ("units 0,,1", ["atlas", "build", "{out}", *R18, "-l", "layer1", "--units", "0,,1", *T]),
    ("layers a,,b", ["atlas", "build", "{out}", *R18, "-l", "layer1,,layer2", *T]),
    ("device meta", ["visualize", *R18, "-l", "layer1", "-f", "1", *T, "--device", "meta"]),
    ("device mps", ["visualize", *R18, "-l", "layer1", "-f", "1", *T, "--device", "mps"]),
    ("huge seed", ["visualize", *R18, "-l", "layer1", "-f", "1", *T, "--seed", "99999999999999999999999"]),
    ("copies 0", ["visualize", *R18, "-l", "layer1", "-f", "1", *T, "--copies", "0"]),
    ("batch size 0", ["visualize", *R18, "-l", "layer1", "-f", "1", *T, "--batch-size", "0"]),
    ("1e400 objective", ["visualize", *R18, "-O", "1e400*channel(layer1, 1)", *T]),
    ("5000 parentheses", ["visualize", *R18, "-O", "(" * 5000 + "channel(layer1, 1)" + ")" * 5000, *T]),
    ("5000 minus signs", ["visualize", *R18, "-O", "-" * 5000 + "channel(layer1, 1)", *T]),
    ("3000 terms", ["visualize", *R18, "-O", "+".join(["channel(layer1, 1)"] * 3000), *T]),
    ("recipe size 56.5", ["visualize", *R18, "-l", "layer1", "-f", "1", "-q", "--recipe", "{half.json}"]),
    ("recipe steps 20.0", ["visualize", *R18, "-l", "layer1", "-f", "1", "-q", "--recipe", "{steps.json}"]),
    ("recipe transforms x", ["visualize", *R18, "-l", "layer1", "-f", "1", "-q", "--recipe", "{transforms.json}"]),
    ("recipe pad x", ["visualize", *R18, "-l", "layer1", "-f", "1", "-q", "--recipe", "{pad.json}"]),
    ("recipe noise grey", ["visualize", *R18, "-l", "layer1", "-f", "1", "-q", "--recipe", "{grey.json}"]),
    ("recipe blur 5.0", ["visualize", *R18, "-l", "layer1", "-f", "1", "-q", "--recipe", "{blur.json}"]),
    ("recipe decorrelate no", ["visualize", *R18, "-l", "layer1", "-f", "1", "-q", "--recipe", "{no.json}"]),
    ("recipe tv nan", ["visualize", *R18, "-l", "layer1", "-f", "1", "-q", "--recipe", "{tvnan.json}"]),
    ("recipe is its own base", ["visualize", *R18, "-l", "layer1", "-f", "1", "-q", "--recipe", "{self.json}"]),
    ("recipe nested 50000 deep", ["visualize", *R18, "-l", "layer1", "-f", "1", "-q", "--recipe", "{deep.json}"]),
    ("out is a file", ["visualize", *R18, "-l", "layer1", "-f", "1", *T, "-o", "{file}"]),
    ("out under a file", ["visualize", *R18, "-l", "layer1", "-f", "1", *T, "-o", "{file}/sub"]),
    ("out in /proc", ["visualize", *R18, "-l", "layer1", "-f", "1", *T, "-o", "/proc/filterscope-x"]),
    ("out name too long", ["visualize", *R18, "-l", "layer1", "-f", "1", *T, "-o", "{out}/" + "x" * 300]),
    ("layers size -5", ["layers", "resnet18", "--size", "-5"]),
    ("top fit bogus", ["top", "{photo}", *R18, "-l", "layer1", "--fit", "bogus", "-o", "{out}"]),
    ("top augment -1", ["top", "{photo}", *R18, "-l", "layer1", "--augment", "-1", "-o", "{out}"]),
    ("top batch -1", ["top", "{photo}", *R18, "-l", "layer1", "--batch-size", "-1", "-o", "{out}"]),
    ("top json folder", ["top", "{photo}", *R18, "-l", "layer1", "--json", "{out}", "-o", "{out}"]),
    ("top json empty", ["top", "{photo}", *R18, "-l", "layer1", "--json", "", "-o", "{out}"]),
    ("top on a FIFO", ["top", "{fifo}", *R18, "-l", "layer1", "-o", "{out}"]),
    ("occlude fit bogus", ["occlude", "{photo}", *R18, "-l", "layer1", "-r", "a=1,1,5,5", "--fit", "bogus",
                           "-o", "{out}"]),
    ("occlude maps-k 0", ["occlude", "{photo}", *R18, "-l", "layer1", "-r", "a=1,1,5,5", "--maps", "--maps-k", "0",
                          "-o", "{out}"]),
    ("occlude maps-k -1", ["occlude", "{photo}", *R18, "-l", "layer1", "-r", "a=1,1,5,5", "--maps", "--maps-k",
                           "-1", "-o", "{out}"]),
    ("regions box is a number", ["occlude", "{photo}", *R18, "-l", "layer1", "--regions", "{regions_number}",
                                 "-o", "{out}"]),
    ("regions box is an object", ["occlude", "{photo}", *R18, "-l", "layer1", "--regions", "{regions_object}",
                                  "-o", "{out}"]),
    ("evaluate text as png", ["evaluate", "{text_png}"]),
    ("evaluate empty png", ["evaluate", "{empty_png}"]),
    ("evaluate missing png", ["evaluate", "{out}/missing.png"]),
    ("evaluate truncated png", ["evaluate", "{truncated_png}"]),
    ("evaluate zip bomb text chunk", ["evaluate", "{bomb_png}"]),
    ("evaluate on a FIFO", ["evaluate", "{fifo}"]),
    ("evaluate samples 0", ["evaluate", "{photo}", "-O", "channel(_blocks.3, 1)", "--samples", "0"]),
    ("evaluate samples -3", ["evaluate", "{photo}", "-O", "channel(_blocks.3, 1)", "--samples", "-3"]),
    ("atlas cluster bogus", ["atlas", "build", "{out}/atlas", *R18, "-l", "layer1.0.conv1", "--cluster",
                             "10.0.0.5:8786"]),
    ("atlas cluster local 0", ["atlas", "build", "{out}/atlas", *R18, "-l", "layer1.0.conv1", "--cluster", "local:0"]),
    ("atlas exemplars 0", ["atlas", "build", "{out}/atlas", *R18, "-l", "layer1.0.conv1", "--exemplars", "0"]),
    ("atlas units out of range", ["atlas", "build", "{out}/atlas", *R18, "-l", "layer1.0.conv1", "--units", "60-70"]),
    ("atlas unknown layer", ["atlas", "build", "{out}/atlas", *R18, "-l", "layer9.0.conv1"]),
    ("atlas no layer", ["atlas", "build", "{out}/atlas", *R18, "-l", ","]),
    ("atlas dataset missing", ["atlas", "build", "{out}/atlas", *R18, "-l", "layer1.0.conv1", "--dataset",
                               "{out}/nowhere"]),
    ("atlas dataset is text", ["atlas", "build", "{out}/atlas", *R18, "-l", "layer1.0.conv1", "--dataset",
                               "{text_png}"]),
    ("atlas recipe none alone", ["atlas", "build", "{out}/atlas", *R18, "-l", "layer1.0.conv1", "--recipe", "none"]),
    ("atlas fit bogus", ["atlas", "build", "{out}/atlas", *R18, "-l", "layer1.0.conv1", "--fit", "bogus"]),
    ("atlas lr nan", ["atlas", "build", "{out}/atlas", *R18, "-l", "layer1.0.conv1", "--lr", "nan"]),
    ("atlas build into a file", ["atlas", "build", "{file}", *R18, "-l", "layer1.0.conv1"]),
    ("atlas show missing", ["atlas", "show", "{out}/nothing", "layer1", "0"]),
    ("atlas status of a file", ["atlas", "status", "{file}"]),
    ("serve missing atlas", ["serve", "{out}/nothing"]),
    ("serve port 0", ["serve", "{out}/nothing", "--port", "0"]),
]


EXPECTED = {  # what some of the messages must say (the rest: any one-line error)
    "lr nan": "lr must be a finite number", "size 100000": "over 4096 px", "two billion filters": "more than 65536",
    "device meta": "not supported", "huge seed": "Seed must be", "copies 0": "--copies must be at least 1",
    "1e400 objective": "a finite number", "5000 parentheses": "at most 100 nested", "3000 terms": "more than 256",
    "recipe decorrelate no": "decorrelate must be true or false", "recipe is its own base": "its own base",
    "out is a file": "exists and is not a folder", "out under a file": "is a file", "out in /proc": "cannot be written",
    "out name too long": "longer than", "top json folder": "is a folder", "top on a FIFO": "Not a regular file",
    "evaluate on a FIFO": "Not a regular file", "evaluate zip bomb text chunk": "Decompressed data too large",
    "evaluate truncated png": "truncated", "evaluate samples 0": "--samples must be at least 1",
    "regions box is a number": "must be a box", "occlude maps-k 0": "--maps-k must be at least 1",
    "atlas cluster bogus": "Bad --cluster", "atlas cluster local 0": "local:N needs N from 1",
    "atlas exemplars 0": "--exemplars must be at least 1", "atlas units out of range": "Unit 64 is out of range",
    "atlas unknown layer": "Unknown layer", "atlas no layer": "has an empty element",
    "atlas dataset missing": "does not exist",
    "atlas dataset is text": "is an image: give the folder", "atlas recipe none alone": "--recipe none renders nothing",
    "atlas fit bogus": "Unknown --fit", "atlas lr nan": "lr must be a finite number",
    "atlas build into a file": "exists and is not a folder", "atlas show missing": "No atlas in",
    "atlas status of a file": "is a file", "serve missing atlas": "No atlas in", "serve port 0": "--port must be",
}


@pytest.mark.integration
@pytest.mark.parametrize(("case", "arguments"), CASES, ids=[c for c, _ in CASES])
def test_hostile_invocations_fail_cleanly(tmp_path, case, arguments):
    files = _files(tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    names = {**{k: str(v) for k, v in files.items()}, "out": str(out)}
    args = []
    for argument in arguments:
        for name, value in names.items():
            argument = argument.replace("{" + name + "}", value)
        args.append(argument)
    if "-o" not in args and arguments[0] == "visualize":
        args += ["-o", str(out)]
    before = sorted(p.name for p in tmp_path.iterdir())
    result = runner.invoke(app, args)
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code == 1, (case, result.exit_code, result.output[-500:])
    assert ("Traceback" not in result.output and not isinstance(result.exception, Exception)) or \
        isinstance(result.exception, SystemExit), result.exception
    assert len(lines) == 1 and lines[0].startswith("error: "), (case, lines[:3])
    assert len(lines[0]) < 400, lines[0]
    assert EXPECTED.get(case, "") in lines[0], (case, lines[0])
    assert list(out.iterdir()) == [] and sorted(p.name for p in tmp_path.iterdir()) == before
