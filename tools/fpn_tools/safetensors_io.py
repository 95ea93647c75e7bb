"""Minimal safetensors reader/writer (numpy only).

Debian ships no safetensors package, and the format is small enough to write directly:
8-byte little-endian header length, a JSON header, then the raw little-endian tensor bytes.
"""
import json
import os
import struct
import tempfile

import numpy as np

_DTYPES = {
    "F64": np.float64, "F32": np.float32, "F16": np.float16, "I64": np.int64,
    "I32": np.int32, "I16": np.int16, "I8": np.int8, "U8": np.uint8, "BOOL": np.bool_,
}
_NAMES = {np.dtype(v): k for k, v in _DTYPES.items()}


def to_numpy(value):
    """Accepts numpy arrays and torch tensors (detached, moved to CPU)."""
    if hasattr(value, "detach"):
        value = value.detach().cpu().contiguous().numpy()
    return np.ascontiguousarray(value)


def serialize(tensors, metadata=None):
    header = {}
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    arrays = []
    offset = 0
    for name, value in tensors.items():
        array = to_numpy(value)
        if array.dtype not in _NAMES:
            raise ValueError(f"safetensors: tensor {name!r} has unsupported dtype {array.dtype}")
        if array.dtype.byteorder == ">":
            array = array.astype(array.dtype.newbyteorder("<"))
        size = array.nbytes
        header[name] = {"dtype": _NAMES[array.dtype], "shape": list(array.shape),
                        "data_offsets": [offset, offset + size]}
        arrays.append(array)
        offset += size
    text = json.dumps(header, separators=(",", ":")).encode("utf-8")
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + b"".join(a.tobytes() for a in arrays)


def save_file(tensors, path, metadata=None):
    """Writes atomically: a temporary file beside `path`, renamed when complete."""
    write_bytes_atomically(path, serialize(tensors, metadata))


def write_bytes_atomically(path, data):
    """Writes `data` to a temporary file beside `path`, then renames it over `path`, so that
    `path` holds either its old content or all of the new."""
    directory = os.path.dirname(os.path.abspath(path))
    fd, temporary = tempfile.mkstemp(dir=directory, prefix="." + os.path.basename(path))
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        # mkstemp creates the file 0600; give it the permissions a plain open() would.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(temporary, 0o666 & ~umask)
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.unlink(temporary)
        raise


def load_file(path):
    """Returns (dict name -> numpy array, metadata dict)."""
    with open(path, "rb") as f:
        data = f.read()
    (length,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + length])
    metadata = header.pop("__metadata__", {})
    base = 8 + length
    tensors = {}
    for name, entry in header.items():
        begin, end = entry["data_offsets"]
        dtype = _DTYPES[entry["dtype"]]
        tensors[name] = np.frombuffer(data[base + begin:base + end], dtype=dtype).reshape(entry["shape"])
    return tensors, metadata
