"""st_io.py: a small safetensors writer and reader in pure Python + numpy.

Used by the weight converters (tools/*_to_safetensors.py) and by the PyTorch
reference scripts, so that nothing depends on the third-party `safetensors`
package. The writer produces the same bytes as resnetd's C writer
(core/safetensors.c): an 8-byte little-endian header length N, compact JSON with
"__metadata__" first (when there is metadata) and the tensors in the given order,
padded with spaces so N is a multiple of 8, then F32 little-endian row-major data.
The reader applies the checks of the reference loader (see docs/weights.md).
"""

import json
import os
import tempfile

import numpy as np

MAX_HEADER = 100_000_000

# dtype name -> (numpy dtype to read the raw bytes as, bytes per element)
_DTYPES = {
    "BOOL": ("|b1", 1), "U8": ("|u1", 1), "I8": ("|i1", 1),
    "F8_E5M2": ("|u1", 1), "F8_E4M3": ("|u1", 1),
    "I16": ("<i2", 2), "U16": ("<u2", 2), "F16": ("<f2", 2), "BF16": ("<u2", 2),
    "I32": ("<i4", 4), "U32": ("<u4", 4), "F32": ("<f4", 4),
    "F64": ("<f8", 8), "I64": ("<i8", 8), "U64": ("<u8", 8),
}


class SafetensorsError(ValueError):
    """A malformed file or an invalid argument; the message names the path and
    the tensor or byte offset involved."""


def header_bytes(tensors, metadata=None):
    """The padded header (without the 8-byte length) and the F32 arrays to write.

    tensors: mapping name -> array-like of floating point values (any float
    dtype; converted to little-endian float32, C order). metadata: mapping of
    str -> str, or None. Returns (header: bytes, arrays: list of np.ndarray).
    Raises SafetensorsError for a non-float tensor, a non-string metadata entry or
    the reserved name "__metadata__".
    """
    header = {}
    if metadata:
        for k, v in metadata.items():
            if not isinstance(k, str) or not isinstance(v, str):
                raise SafetensorsError(f"metadata {k!r}: keys and values must be str")
        header["__metadata__"] = dict(metadata)
    arrays = []
    offset = 0
    for name, value in tensors.items():
        if not isinstance(name, str):
            raise SafetensorsError(f"tensor name {name!r} is not a str")
        if name == "__metadata__":
            raise SafetensorsError("a tensor may not be named '__metadata__'")
        a = np.asarray(value)
        if a.dtype.kind != "f":
            raise SafetensorsError(f"tensor '{name}': dtype {a.dtype} is not floating point")
        a = np.asarray(a, dtype="<f4", order="C")  # (ascontiguousarray would make 0-d 1-d)
        header[name] = {"dtype": "F32", "shape": list(a.shape),
                        "data_offsets": [offset, offset + a.nbytes]}
        offset += a.nbytes
        arrays.append(a)
    text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    text += b" " * ((8 - len(text) % 8) % 8)
    return text, arrays


def save(path, tensors, metadata=None):
    """Writes tensors (dict name -> float array) and metadata (dict str -> str or
    None) to path as F32 safetensors, atomically: a temporary file in the same
    directory, fsync, rename. On failure the temporary file is removed and an
    existing file at path is left as it was."""
    header, arrays = header_bytes(tensors, metadata)
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=os.path.basename(path) + ".tmp.", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(len(header).to_bytes(8, "little"))
            f.write(header)
            for a in arrays:
                f.write(a.tobytes())
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def _reject_duplicates(pairs):
    d = {}
    for k, v in pairs:
        if k in d:
            raise SafetensorsError(f"duplicate key '{k}'")
        d[k] = v
    return d


def _is_uint(x):
    return isinstance(x, int) and not isinstance(x, bool) and x >= 0


def load(path):
    """Reads and validates path. Returns (tensors, metadata): tensors is a dict
    name -> np.ndarray in header order (F16 and BF16 converted to float32, other
    dtypes as their numpy equivalent, F8 as raw uint8; arrays are writable
    copies), metadata a dict str -> str ({} when absent). Raises SafetensorsError
    naming the tensor or offsets for a malformed file."""
    with open(path, "rb") as f:
        buf = f.read()
    if len(buf) < 8:
        raise SafetensorsError(f"{path}: file is {len(buf)} bytes, shorter than the "
                               "8-byte header length")
    n = int.from_bytes(buf[:8], "little")
    if n > MAX_HEADER:
        raise SafetensorsError(f"{path}: header length {n} is over the limit of {MAX_HEADER} bytes")
    if 8 + n > len(buf):
        raise SafetensorsError(f"{path}: file is {len(buf)} bytes but header says 8 + {n}")
    try:
        header = json.loads(buf[8:8 + n].decode("utf-8"), object_pairs_hook=_reject_duplicates)
    except (UnicodeDecodeError, json.JSONDecodeError, SafetensorsError) as e:
        raise SafetensorsError(f"{path}: header (file bytes 8..{8 + n}) is not valid UTF-8 "
                               f"JSON: {e}") from None
    if not isinstance(header, dict):
        raise SafetensorsError(f"{path}: header (file bytes 8..{8 + n}) is not a JSON object")
    metadata = header.pop("__metadata__", {})
    if not isinstance(metadata, dict):
        raise SafetensorsError(f'{path}: "__metadata__" is not a JSON object')
    for k, v in metadata.items():
        if not isinstance(v, str):
            raise SafetensorsError(f"{path}: \"__metadata__\" key '{k}': value is not a string")

    infos = []
    for name, info in header.items():
        where = f"{path}: tensor '{name}'"
        if not isinstance(info, dict):
            raise SafetensorsError(f"{where}: header entry is not a JSON object")
        dtype, shape, offs = info.get("dtype"), info.get("shape"), info.get("data_offsets")
        if dtype not in _DTYPES:
            raise SafetensorsError(f"{where}: unknown dtype '{dtype}'")
        if not isinstance(shape, list) or not all(_is_uint(d) for d in shape):
            raise SafetensorsError(f"{where}: shape is not a list of non-negative integers")
        if len(shape) > 8:
            raise SafetensorsError(f"{where}: shape has {len(shape)} dimensions, at most 8 allowed")
        if not (isinstance(offs, list) and len(offs) == 2 and all(_is_uint(o) for o in offs)):
            raise SafetensorsError(f'{where}: "data_offsets" is not [begin, end] of two '
                                   "non-negative integers")
        infos.append((name, dtype, shape, offs[0], offs[1]))

    data = memoryview(buf)[8 + n:]
    prev_end, prev_name = 0, None
    for name, dtype, shape, begin, end in sorted(infos, key=lambda t: (t[3], t[4])):
        where = f"{path}: tensor '{name}': data_offsets [{begin}, {end}]"
        if begin != prev_end:
            if prev_name is None:
                raise SafetensorsError(f"{where}: the first tensor of the data section must "
                                       f"begin at 0, not {begin}")
            kind = "gap" if begin > prev_end else "overlap"
            raise SafetensorsError(f"{where} begin at {begin} but the previous tensor "
                                   f"'{prev_name}' ends at {prev_end}: {kind} of "
                                   f"{abs(begin - prev_end)} bytes")
        if end < begin:
            raise SafetensorsError(f"{where} end before they begin")
        need = int(np.prod(shape, dtype=object)) * _DTYPES[dtype][1]
        if end - begin != need:
            raise SafetensorsError(f"{where} hold {end - begin} bytes but shape "
                                   f"[{','.join(map(str, shape))}] {dtype} needs {need}")
        prev_end, prev_name = end, name
    if prev_end < len(data):
        raise SafetensorsError(f"{path}: tensors end at data offset {prev_end} but the data "
                               f"section is {len(data)} bytes: {len(data) - prev_end} "
                               "trailing bytes")
    if prev_end > len(data):
        raise SafetensorsError(f"{path}: tensors end at data offset {prev_end} but the file "
                               f"is {len(buf)} bytes, a data section of {len(data)} bytes: "
                               f"{prev_end - len(data)} bytes missing (truncated?)")

    tensors = {}
    for name, dtype, shape, begin, end in infos:
        a = np.frombuffer(data[begin:end], dtype=_DTYPES[dtype][0]).reshape(shape)
        if dtype == "BF16":
            a = (a.astype("<u4") << 16).view("<f4")
        elif dtype == "F16":
            a = a.astype(np.float32)
        tensors[name] = a.copy()
    return tensors, dict(metadata)
