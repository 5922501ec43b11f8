"""Byte-level damage to safetensors files."""

import json
import os
import struct


def patch_bytes(path, offset, data):
    with open(path, "r+b") as f:
        f.seek(offset if offset >= 0 else os.path.getsize(path) + offset)
        f.write(data)


def data_offset(path, name):
    """Where tensor `name`'s bytes start in a safetensors file."""
    (header_size,) = struct.unpack("<Q", open(path, "rb").read(8))
    header = json.loads(open(path, "rb").read(8 + header_size)[8:])
    return 8 + header_size + header[name]["data_offsets"][0]
