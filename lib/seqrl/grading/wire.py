"""A safe, JSON-only encoding of a student function's outputs, from the sandbox to the grader.

The sandbox runs untrusted code, so what it sends back must never be unpickled: an output is
encoded as tagged JSON (numbers, strings, tuples, lists, dicts, numpy arrays, torch tensors; anything
else as an *opaque* value carrying only its type name and a short repr), and decoded by
:func:`decode`, which validates every field and never imports or calls anything named in the data.

``decode(encode(x))`` compares equal to ``x`` under :func:`seqrl.grading.checks.compare`: arrays
keep their dtype and shape (their raw bytes travel base64-encoded), floats round-trip exactly
(``float.hex``), and an opaque value decodes to an object of a class with the original type's name,
so ``compare`` reports "expected a torch.Tensor, got list_iterator" as it would in the notebook.
"""
from __future__ import annotations

import base64
from typing import Any

__all__ = ["MAX_ELEMENTS", "WireError", "encode", "decode"]

MAX_ELEMENTS = 1_000_000  # per array; a bigger output is sent as an opaque "too large" value
MAX_ITEMS = 10_000  # per list, tuple or dict
MAX_DEPTH = 20
MAX_TEXT = 2_000
_NUMERIC_KINDS = "biufc"  # bool, int, uint, float, complex: the numpy dtypes allowed on the wire


class WireError(ValueError):
    """Data from the sandbox that is not a valid encoding."""


# ---------------------------------------------------------------------------------------------
# Encoding (in the sandbox)


def _short_repr(value: Any) -> str:
    try:
        text = repr(value)
    except Exception as error:  # a student's __repr__ may raise
        text = f"<unprintable {type(value).__name__}: {type(error).__name__}>"
    return text if len(text) <= 200 else text[:197] + "..."


def _opaque(value: Any, why: str = "") -> dict:
    return {"t": "opaque", "type": type(value).__name__[:100], "repr": why or _short_repr(value)}


def _array(kind: str, array: Any, extra: dict) -> dict:
    import numpy as np

    array = np.asarray(array)  # (not ascontiguousarray: it turns a 0-d array into 1-d); tobytes is C order
    if array.dtype.kind not in _NUMERIC_KINDS:
        return {"t": "opaque", "type": "ndarray", "repr": f"array of dtype {array.dtype}"}
    if array.size > MAX_ELEMENTS:
        return {"t": "opaque", "type": kind, "repr": f"too large to grade ({array.size} elements)"}
    return {"t": kind, "dtype": array.dtype.str, "shape": list(array.shape),
            "data": base64.b64encode(array.tobytes()).decode("ascii"), **extra}


def _tensor(value: Any) -> dict:
    import torch

    tensor = value.detach()
    if tensor.layout != torch.strided or tensor.device.type == "meta":
        return _opaque(value, f"tensor with layout {tensor.layout} on {tensor.device}")
    if tensor.numel() > MAX_ELEMENTS:
        return {"t": "opaque", "type": "Tensor", "repr": f"too large to grade ({tensor.numel()} elements)"}
    dtype = str(tensor.dtype)
    tensor = tensor.cpu().resolve_conj().resolve_neg()
    if tensor.dtype in (torch.bfloat16, torch.float16):
        tensor = tensor.float()  # numpy has no bfloat16; the recorded dtype keeps the original
    return _array("tensor", tensor.numpy(), {"torch_dtype": dtype})


def encode(value: Any, depth: int = 0) -> dict:
    """``value`` as tagged JSON-ready data; never raises (a failure becomes an opaque value)."""
    try:
        return _encode(value, depth)
    except Exception as error:  # noqa: BLE001 - a student's object may break anything
        return {"t": "opaque", "type": type(value).__name__[:100], "repr": f"could not be encoded: {type(error).__name__}"}


def _encode(value: Any, depth: int) -> dict:
    if depth > MAX_DEPTH:
        return {"t": "opaque", "type": type(value).__name__[:100], "repr": "nested too deeply"}
    kind = type(value)
    if value is None:
        return {"t": "none"}
    if kind is bool:
        return {"t": "bool", "v": value}
    if kind is int:
        text = str(value) if value.bit_length() < 4000 else None
        return {"t": "int", "v": text} if text else _opaque(value, "integer too large")
    if kind is float:
        return {"t": "float", "v": value.hex()}
    if kind is str:
        return {"t": "str", "v": value[:MAX_TEXT]}
    module = kind.__module__
    if module.startswith("torch") and kind.__name__ in ("Tensor", "Parameter"):
        return _tensor(value)
    if module == "numpy" and kind.__name__ == "ndarray":
        return _array("ndarray", value, {})
    if module == "numpy" and hasattr(value, "dtype") and getattr(value, "shape", None) == ():
        encoded = _array("ndarray", value.reshape(()) if hasattr(value, "reshape") else value, {})
        return {**encoded, "t": "npscalar"} if encoded["t"] == "ndarray" else encoded
    if kind in (tuple, list):
        if len(value) > MAX_ITEMS:
            return _opaque(value, f"{kind.__name__} of {len(value)} items, too long to grade")
        return {"t": kind.__name__, "items": [_encode(item, depth + 1) for item in value]}
    if kind is dict:
        if len(value) > MAX_ITEMS:
            return _opaque(value, f"dict of {len(value)} items, too long to grade")
        return {"t": "dict", "items": [[_encode(k, depth + 1), _encode(v, depth + 1)] for k, v in value.items()]}
    return _opaque(value)


# ---------------------------------------------------------------------------------------------
# Decoding (in the grader): validate everything


_OPAQUE_CLASSES: dict[str, type] = {}


def _opaque_class(name: str) -> type:
    """A class named like the student's type, so ``compare`` names it; its instances show the repr."""
    if not name.isidentifier():
        name = "object"
    if name not in _OPAQUE_CLASSES:
        _OPAQUE_CLASSES[name] = type(name, (), {
            "__init__": lambda self, text: setattr(self, "_text", text),
            "__repr__": lambda self: self._text,
            "__eq__": lambda self, other: False,
            "__hash__": lambda self: id(self),
        })
    return _OPAQUE_CLASSES[name]


def _field(data: dict, key: str, kind: type) -> Any:
    value = data.get(key)
    if not isinstance(value, kind) or isinstance(value, bool) and kind is not bool:
        raise WireError(f"field {key!r} should be {kind.__name__}")
    return value


def _decode_array(data: dict) -> Any:
    import numpy as np

    try:
        dtype = np.dtype(_field(data, "dtype", str))
    except TypeError as error:
        raise WireError(f"bad dtype: {error}") from None
    if dtype.kind not in _NUMERIC_KINDS or dtype.hasobject:
        raise WireError(f"dtype {dtype} is not allowed")
    shape = _field(data, "shape", list)
    if len(shape) > 32 or not all(isinstance(n, int) and not isinstance(n, bool) and 0 <= n for n in shape):
        raise WireError("bad shape")
    size = 1
    for n in shape:
        size *= n
    if size > MAX_ELEMENTS:
        raise WireError("array too large")
    raw = base64.b64decode(_field(data, "data", str).encode("ascii"), validate=True)
    if len(raw) != size * dtype.itemsize:
        raise WireError("array data does not match its shape and dtype")
    return np.frombuffer(raw, dtype=dtype).reshape(shape).copy()


def _decode_tensor(data: dict) -> Any:
    import torch

    array = _decode_array(data)
    name = _field(data, "torch_dtype", str)
    dtype = getattr(torch, name.removeprefix("torch."), None)
    if not isinstance(dtype, torch.dtype):
        raise WireError(f"unknown torch dtype {name!r}")
    return torch.from_numpy(array).to(dtype)


def decode(data: Any, depth: int = 0) -> Any:
    """The value encoded by :func:`encode`; raises :class:`WireError` on anything malformed."""
    if depth > MAX_DEPTH + 1:
        raise WireError("nested too deeply")
    if not isinstance(data, dict):
        raise WireError("an encoded value must be a JSON object")
    tag = data.get("t")
    if tag == "none":
        return None
    if tag == "bool":
        return _field(data, "v", bool)
    if tag == "int":
        text = _field(data, "v", str)
        if len(text) > 1300 or not text.lstrip("-").isdigit():
            raise WireError("bad integer")
        return int(text)
    if tag == "float":
        try:
            return float.fromhex(_field(data, "v", str))
        except (ValueError, OverflowError):
            raise WireError("bad float") from None
    if tag == "str":
        return _field(data, "v", str)[:MAX_TEXT]
    if tag in ("list", "tuple"):
        items = _field(data, "items", list)
        if len(items) > MAX_ITEMS:
            raise WireError("too many items")
        decoded = [decode(item, depth + 1) for item in items]
        return decoded if tag == "list" else tuple(decoded)
    if tag == "dict":
        items = _field(data, "items", list)
        if len(items) > MAX_ITEMS or not all(isinstance(pair, list) and len(pair) == 2 for pair in items):
            raise WireError("bad dict items")
        result = {}
        for key, value in items:
            key = decode(key, depth + 1)
            try:
                hash(key)
            except TypeError:
                raise WireError("unhashable dict key") from None
            result[key] = decode(value, depth + 1)
        return result
    if tag == "ndarray":
        return _decode_array(data)
    if tag == "npscalar":
        return _decode_array(data)[()]
    if tag == "tensor":
        return _decode_tensor(data)
    if tag == "opaque":
        return _opaque_class(_field(data, "type", str)[:100])(_field(data, "repr", str)[:MAX_TEXT])
    raise WireError(f"unknown tag {tag!r}")
