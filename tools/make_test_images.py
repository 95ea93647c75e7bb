#!/usr/bin/python3
"""Writes the tiny 16-bit PNGs that tests/app/test_image_io.cpp decodes (stb_image_write, which the
test uses for everything else, writes only 8-bit PNGs):

  tests/app/data/rgb16_3x2.png    16-bit RGB, 3 wide and 2 high
  tests/app/data/graya16_2x1.png  16-bit gray + alpha, 2 wide and 1 high

Only the standard library: the PNG chunks are packed by hand and compressed with zlib. The sample
values are listed below so that the test can state what each pixel decodes to (value >> 8).

Usage: /usr/bin/python3 tools/make_test_images.py [--out tests/app/data]
"""
import argparse
import os
import struct
import zlib

# Rows of (R, G, B) 16-bit samples: low bytes that must be dropped, high bytes that must be kept.
RGB16 = [
    [(0x0000, 0x00FF, 0xFFFF), (0x1234, 0x8000, 0x80FF), (0x0101, 0xFEFF, 0x7F80)],
    [(0xFF00, 0x0001, 0xABCD), (0x2020, 0x4040, 0x6060), (0xFFFF, 0x0000, 0x0100)],
]
# One row of (gray, alpha) 16-bit samples.
GRAYA16 = [[(0x1234, 0x0000), (0xF0F0, 0xFFFF)]]


def chunk(kind, data):
    body = kind + data
    return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body) & 0xFFFFFFFF)


def png16(rows, color_type):
    height = len(rows)
    width = len(rows[0])
    raw = b""
    for row in rows:
        raw += b"\x00"  # filter type None
        for pixel in row:
            raw += b"".join(struct.pack(">H", sample) for sample in pixel)
    header = struct.pack(">IIBBBBB", width, height, 16, color_type, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw, 9)) +
            chunk(b"IEND", b""))


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    parser.add_argument("--out", default=os.path.join(root, "tests", "app", "data"))
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)
    for name, data in [("rgb16_3x2.png", png16(RGB16, 2)), ("graya16_2x1.png", png16(GRAYA16, 4))]:
        with open(os.path.join(args.out, name), "wb") as out:
            out.write(data)


if __name__ == "__main__":
    main()
