#!/usr/bin/python3
"""Writes the seed corpora of the fuzz targets in tests/fuzz/ (each file well under 4 KB):

  tests/fuzz/corpus/safetensors/  valid files (every dtype, metadata, escaped names, zero-size and
                                  unaligned tensors) and invalid ones (one fault each)
  tests/fuzz/corpus/image/        tiny images in each format the example programs decode: PNG
                                  (RGB, RGBA, gray, gray + alpha, paletted, tRNS, interlaced,
                                  1/2/16-bit, eXIf), JPEG (baseline, progressive, gray, CMYK,
                                  4:4:4, restart markers, EXIF) and PNM; and decompression bombs

The fuzzers start from these, and the ctests fuzz_replay_<name> replay them in every build. Only
this script's own files are rewritten; other files in the folders (crash inputs kept as
regression seeds) are left alone.

Usage: /usr/bin/python3 tools/make_fuzz_corpus.py [--out tests/fuzz/corpus]
"""
import argparse
import io
import json
import os
import struct
import sys
import zlib

import numpy as np
from PIL import Image

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
sys.path.insert(0, os.path.join(ROOT, "tools"))
from fpn_tools.safetensors_io import serialize  # noqa: E402

MAX_SEED_BYTES = 4096


def raw_file(header, data=b""):
    """A safetensors file around `header` (a dict, or text taken verbatim), unpadded."""
    if isinstance(header, dict):
        header = json.dumps(header, separators=(",", ":"))
    if isinstance(header, str):
        header = header.encode("utf-8")
    return struct.pack("<Q", len(header)) + header + data


def entry(dtype, shape, begin, end):
    return {"dtype": dtype, "shape": shape, "data_offsets": [begin, end]}


def safetensors_seeds():
    rng = np.random.default_rng(20240607)
    seeds = {}

    # Valid files, as the Python writer makes them.
    seeds["valid_f32_metadata"] = serialize(
        {"backbone.body.conv1.weight": rng.standard_normal((4, 3, 2, 2)).astype(np.float32),
         "backbone.body.bn1.bias": rng.standard_normal(4).astype(np.float32)},
        metadata={"format": "pt", "arch": "maskrcnn_resnet50_fpn"})
    seeds["valid_every_numpy_dtype"] = serialize({
        "f64": rng.standard_normal(3),
        "f32": rng.standard_normal((2, 2)).astype(np.float32),
        "f16": np.array([1.0, -2.0, 6.1e-5, np.inf, np.nan, 0.0], dtype=np.float16),
        "i64": np.arange(3, dtype=np.int64),
        "i32": np.arange(3, dtype=np.int32),
        "i16": np.arange(3, dtype=np.int16),
        "i8": np.arange(-2, 2, dtype=np.int8),
        "u8": np.arange(5, dtype=np.uint8),
        "bool": np.array([True, False, True]),
    })
    seeds["valid_zero_size_and_scalar"] = serialize({
        "empty": np.zeros((0, 3), dtype=np.float32),
        "scalar": np.array(2.5, dtype=np.float32),
        "zero_rank6": np.zeros((1, 1, 1, 1, 0, 1), dtype=np.float32),
    })
    seeds["valid_escaped_names"] = serialize(
        {'quote"back\\slash': np.ones(2, dtype=np.float32),
         "tab\tnewline\n\u00e9\u4e2d\U0001f600": np.ones(1, dtype=np.float16),
         "": np.zeros(1, dtype=np.float32)},
        metadata={"\u0000key": "value\u001f", "emoji \U0001f600": "\\u0041"})
    seeds["valid_empty_header"] = raw_file("{}")
    seeds["valid_only_metadata"] = raw_file({"__metadata__": {"a": "b", "c": ""}})
    # BF16 has no numpy dtype: 1.0, -2.0 and the smallest subnormal, by hand.
    seeds["valid_bf16"] = raw_file({"b": entry("BF16", [3], 0, 6)},
                                   struct.pack("<3H", 0x3F80, 0xC000, 0x0001))
    # Data not 8-byte aligned (unpadded header, odd offsets), tensors out of file order, a gap,
    # fields in another order, an unknown field and a repeated field (the first counts).
    seeds["valid_unaligned_unordered"] = raw_file(
        '{"late":{"data_offsets":[9,17],"shape":[2],"dtype":"F32","extra":[1,{"x":null}]},'
        '"early":{"dtype":"F64","shape":[],"data_offsets":[1,9],"dtype":"I8"},'
        '"u8":{"dtype":"U8","shape":[1,1],"data_offsets":[18,19]}}',
        bytes(range(1, 21)))
    seeds["valid_whitespace_and_numbers"] = raw_file(
        ' \t\r\n{ "w" : { "dtype" : "F16" , "shape" : [ 1 , 2 ] , "data_offsets" : [ 0 , 4 ] ,'
        ' "n" : [-0.5e+3, 1E-2, 0, true, false, null, "\\ud83d\\ude00\\/"] } } ',
        b"\x00\x3c\x00\xc0")

    # As many metadata entries as fit in a seed: the reader's memory, kept as a std::map, is at
    # its largest per header byte here (fuzz_safetensors checks it against a budget).
    seeds["valid_many_metadata"] = raw_file(
        {"__metadata__": {format(i, "x"): "" for i in range(470)}})

    # Invalid files, one fault each.
    good = {"w": entry("F32", [2], 0, 8)}
    eight = b"\x00" * 8
    seeds["bad_shorter_than_length_field"] = b"\x02\x00\x00"
    seeds["bad_length_beyond_file"] = struct.pack("<Q", 100) + b"{}"
    seeds["bad_length_huge"] = struct.pack("<Q", 2 ** 63) + b"{}"
    seeds["bad_not_json"] = raw_file('{"w":{"dtype":"F32",}}')
    seeds["bad_trailing_characters"] = raw_file('{} {}')
    seeds["bad_deep_nesting"] = raw_file("[" * 100 + "]" * 100)
    seeds["bad_not_an_object"] = raw_file("[1,2,3]")
    seeds["bad_unpaired_surrogate"] = raw_file('{"\\ud800x":1}')
    seeds["bad_control_character"] = raw_file('{"a\x01":1}')
    seeds["bad_unknown_dtype"] = raw_file({"w": entry("F8_E4M3", [8], 0, 8)}, eight)
    seeds["bad_missing_field"] = raw_file({"w": {"dtype": "F32", "shape": [2]}}, eight)
    seeds["bad_negative_dim"] = raw_file({"w": entry("F32", [-2], 0, 8)}, eight)
    seeds["bad_rank_7"] = raw_file({"w": entry("U8", [1] * 6 + [8], 0, 8)}, eight)
    seeds["bad_long_shape"] = raw_file({"w": entry("U8", [1] * 300, 0, 1)}, b"\x00")
    seeds["bad_element_count_overflows"] = raw_file({"w": entry("F32", [2 ** 32, 2 ** 32], 0, 8)},
                                                    eight)
    seeds["bad_byte_size_overflows"] = raw_file({"w": entry("F64", [2 ** 61], 0, 8)}, eight)
    # 2^40 elements claimed over an empty range: must be refused before anything is allocated.
    seeds["bad_huge_shape_empty_range"] = raw_file({"w": entry("F32", [2 ** 40], 0, 0)})
    seeds["bad_offsets_outside_data"] = raw_file({"w": entry("F32", [4], 0, 16)}, eight)
    seeds["bad_offsets_reversed"] = raw_file({"w": entry("F32", [1], 8, 4)}, eight)
    seeds["bad_offsets_beyond_uint64"] = raw_file(
        '{"w":{"dtype":"F32","shape":[0],"data_offsets":[18446744073709551616,0]}}')
    seeds["bad_size_mismatch"] = raw_file({"w": entry("F16", [2, 3], 0, 8)}, eight)
    seeds["bad_overlap"] = raw_file({"a": entry("F32", [2], 0, 8), "b": entry("F32", [2], 4, 12)},
                                    b"\x00" * 12)
    seeds["bad_duplicate_name"] = raw_file(
        '{"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},'
        '"w":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}', eight)
    seeds["bad_metadata_not_string"] = raw_file({"__metadata__": {"num_classes": 91}, **good},
                                                eight)
    seeds["bad_metadata_twice"] = raw_file('{"__metadata__":{},"__metadata__":{}}')
    # Found by fuzz_safetensors' memory budget: the reader used to build a JSON tree of ~90 bytes
    # per value, and "0," is a value in 2 bytes, so refusing these took 70 times their size.
    seeds["regression_json_tree_of_numbers"] = raw_file("[" + "0," * 1990 + "0]")
    seeds["regression_json_tree_of_members"] = raw_file('{"a":{' + '"":0,' * 790 + '"":0}}')
    return {name + ".safetensors": data for name, data in seeds.items()}


def pil_bytes(image, format, **options):
    out = io.BytesIO()
    image.save(out, format=format, **options)
    return out.getvalue()


def png_chunk(kind, data):
    body = kind + data
    return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))


def png_header_only(width, height, bit_depth=8, color_type=2):
    """A PNG signature and IHDR chunk (8-bit RGB by default), nothing more."""
    header = struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header)


def jpeg_with_size(jpeg, width, height):
    """`jpeg` with the size in its frame header (SOF0 or SOF2) replaced."""
    sof = max(jpeg.find(b"\xff\xc0"), jpeg.find(b"\xff\xc2"))
    return jpeg[:sof + 5] + struct.pack(">HH", height, width) + jpeg[sof + 9:]


def png_raw(width, height, bit_depth, color_type, raw, interlaced=False, before_idat=b""):
    """A PNG around already filtered scanline bytes `raw` (PIL cannot write every variant)."""
    header = struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, int(interlaced))
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header) + before_idat
            + png_chunk(b"IDAT", zlib.compress(raw, 9)) + png_chunk(b"IEND", b""))


def png_adam7(pixels):
    """An 8-bit RGB PNG with Adam7 interlacing (PIL writes only non-interlaced PNGs)."""
    height, width, _ = pixels.shape
    passes = [(0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2),
              (0, 1, 1, 2)]
    raw = b""
    for x0, y0, dx, dy in passes:
        sub = pixels[y0::dy, x0::dx]
        if sub.size:
            raw += b"".join(b"\x00" + row.tobytes() for row in sub)  # filter type None
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 1)
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header)
            + png_chunk(b"IDAT", zlib.compress(raw, 9)) + png_chunk(b"IEND", b""))


def image_seeds():
    rng = np.random.default_rng(7)
    rgb = Image.fromarray(rng.integers(0, 256, (5, 7, 3), dtype=np.uint8), "RGB")
    rgba = Image.fromarray(rng.integers(0, 256, (3, 4, 4), dtype=np.uint8), "RGBA")
    gray = Image.fromarray(rng.integers(0, 256, (4, 3), dtype=np.uint8), "L")
    gray_alpha = Image.fromarray(rng.integers(0, 256, (2, 3, 2), dtype=np.uint8), "LA")
    paletted = rgb.convert("P", palette=Image.ADAPTIVE, colors=8)
    gray16 = Image.fromarray(rng.integers(0, 65536, (3, 2), dtype=np.uint16))
    large = Image.fromarray(rng.integers(0, 256, (16, 24, 3), dtype=np.uint8), "RGB")

    cmyk = Image.fromarray(rng.integers(0, 256, (8, 8, 4), dtype=np.uint8), "CMYK")
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90 degrees clockwise
    exif_bytes = exif.tobytes()

    seeds = {
        "rgb.png": pil_bytes(rgb, "PNG"),
        "rgba.png": pil_bytes(rgba, "PNG"),
        "gray.png": pil_bytes(gray, "PNG"),
        "gray_alpha.png": pil_bytes(gray_alpha, "PNG"),
        "paletted.png": pil_bytes(paletted, "PNG"),
        "interlaced.png": png_adam7(np.asarray(large)),
        "gray16.png": pil_bytes(gray16, "PNG"),
        "baseline.jpg": pil_bytes(large, "JPEG", quality=90),
        "progressive.jpg": pil_bytes(large, "JPEG", quality=75, progressive=True),
        "gray.jpg": pil_bytes(gray, "JPEG", quality=90),
        "subsampled_420.jpg": pil_bytes(large, "JPEG", quality=50, subsampling=2),
        "progressive_444.jpg": pil_bytes(large, "JPEG", quality=90, subsampling=0,
                                         progressive=True),
        "restart_markers.jpg": pil_bytes(large, "JPEG", restart_marker_blocks=2),
        "cmyk.jpg": pil_bytes(cmyk, "JPEG", quality=90),
        "exif_orientation_6.jpg": pil_bytes(rgb, "JPEG", exif=exif_bytes),
        "paletted_trns.png": pil_bytes(paletted, "PNG", transparency=2),
        "paletted_4bit.png": pil_bytes(paletted, "PNG", bits=4),
        "gray_2bit.png": png_raw(5, 3, 2, 0, b"".join(b"\x00\x1b\x4e" for _ in range(3))),
        # Adam7 on 2 x 3: passes 1, 5 and 6 (two rows) hold one pixel a row, pass 7 two.
        "gray16_interlaced.png": png_raw(2, 3, 16, 0, b"\x00\x00\x10" b"\x00\x01\x20"
                                         b"\x00\x02\x30" b"\x00\x03\x40" b"\x00\x04\x50\xff\xff",
                                         interlaced=True),
        "exif_orientation_8.png": png_raw(1, 1, 8, 2, b"\x00\x01\x02\x03",
                                          before_idat=png_chunk(b"eXIf", exif_bytes[6:])),
        "rgb.ppm": pil_bytes(rgb, "PPM"),
        "gray.pgm": pil_bytes(gray, "PPM"),
    }
    # Found by fuzz_image. A PNG header of 2^32 - 1 by 2^32 - 1 overflowed the pixel count (int64)
    # before the limit check; a PGM header of height 0 decoded to an image of no pixels.
    seeds["regression_png_size_overflow.png"] = png_header_only(2 ** 32 - 1, 2 ** 32 - 1)
    seeds["regression_pgm_height_0.pgm"] = b"P5\n34\n \x03\n2\xc2\xff~,\xfd\xe9\xe1Zw\x89x\x1e7"
    # Decompression bombs, small in bytes: 3 MiB of zeros deflate to 3 KB. Behind a header
    # claiming 37838 x 37838 RGB (the 4 GiB such a stream of a 4 MB file fills) the loader refuses
    # from the header; behind a 16 x 16 image it inflates only the rows declared.
    zeros = zlib.compress(bytes(3 << 20), 9)
    seeds["bomb_png_huge_header.png"] = (png_header_only(37838, 37838) + png_chunk(b"IDAT", zeros)
                                         + png_chunk(b"IEND", b""))
    seeds["bomb_png_small_image_long_idat.png"] = (
        png_header_only(16, 16) + png_chunk(b"IDAT", zeros) + png_chunk(b"IEND", b""))
    # JPEG frame headers claiming more than the data holds: 60000 x 60000 (over any pixel limit)
    # and 2000 x 2000 progressive (within the fuzzer's: libjpeg decodes until the data runs out).
    seeds["bomb_jpeg_huge_header.jpg"] = jpeg_with_size(seeds["baseline.jpg"], 60000, 60000)
    seeds["bomb_jpeg_progressive_2000.jpg"] = jpeg_with_size(seeds["progressive.jpg"], 2000, 2000)
    # The 16-bit PNGs the image_io tests decode, packed by tools/make_test_images.py.
    for name in ("rgb16_3x2.png", "graya16_2x1.png"):
        with open(os.path.join(ROOT, "tests", "app", "data", name), "rb") as f:
            seeds[name] = f.read()
    return seeds


def write_all(folder, seeds):
    os.makedirs(folder, exist_ok=True)
    for name, data in sorted(seeds.items()):
        if len(data) >= MAX_SEED_BYTES:
            raise SystemExit(f"{name} is {len(data)} bytes; seeds stay under {MAX_SEED_BYTES}")
        with open(os.path.join(folder, name), "wb") as f:
            f.write(data)
    print(f"wrote {len(seeds)} seeds to {folder}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=os.path.join(ROOT, "tests", "fuzz", "corpus"))
    args = parser.parse_args()
    write_all(os.path.join(args.out, "safetensors"), safetensors_seeds())
    write_all(os.path.join(args.out, "image"), image_seeds())


if __name__ == "__main__":
    main()
