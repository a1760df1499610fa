"""Lesson 12's exercise checks reject wrong but plausible answers, saying what they expected."""

from __future__ import annotations

import pytest
from exercise_harness import check_fails

SOLUTIONS = "solutions/12_release_solutions.ipynb"

# Offsets counted from the start of the file instead of the start of the data part.
WRONG_OFFSETS = """
def write_safetensors(tensors, metadata=None):
    names = {torch.float32: "F32", torch.float16: "F16", torch.int64: "I64", torch.uint8: "U8"}
    header = {"__metadata__": metadata} if metadata else {}
    sizes = [t.numel() * t.element_size() for t in tensors.values()]
    blobs = [t.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes() for t in tensors.values()]
    start = 4096  # a guess at where the data will begin, then padded to it
    offset = start
    for (name, t), size in zip(tensors.items(), sizes):
        header[name] = {"dtype": names[t.dtype], "shape": list(t.shape),
                        "data_offsets": [offset, offset + size]}
        offset += size
    raw = json.dumps(header).encode()
    raw += b" " * (start - 8 - len(raw))
    return struct.pack("<Q", len(raw)) + raw + b"".join(blobs)
"""

# No padding: the data part starts wherever the JSON ends.
WRONG_PADDING = """
def write_safetensors(tensors, metadata=None):
    names = {torch.float32: "F32", torch.float16: "F16", torch.int64: "I64", torch.uint8: "U8"}
    header = {"__metadata__": metadata} if metadata else {}
    blobs, offset = [], 0
    for name, t in tensors.items():
        blob = t.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()
        header[name] = {"dtype": names[t.dtype], "shape": list(t.shape),
                        "data_offsets": [offset, offset + len(blob)]}
        blobs.append(blob)
        offset += len(blob)
    raw = json.dumps(header).encode() + b"    "
    if (8 + len(raw)) % 8 == 0:
        raw += b" "
    return struct.pack("<Q", len(raw)) + raw + b"".join(blobs)
"""

# Casts the model itself (no copy): the float32 reference afterwards is the rounded model.
WRONG_IN_PLACE = """
def precision_drift(model, ids, dtype, new_tokens):
    with torch.no_grad():
        ref, _ = model(ids)
        low = model.to(dtype)
        got, _ = low(ids)
    drift = (got.float() - ref).abs().max().item()
    model.float()
    return drift, new_tokens
"""

# Compares the 16-bit model with itself after casting the reference too (always 0 drift).
WRONG_SAME_DTYPE = """
import copy

def precision_drift(model, ids, dtype, new_tokens):
    low = copy.deepcopy(model).to(dtype).eval()
    with torch.no_grad():
        got, _ = low(ids)
        ref, _ = low(ids)
    return (got.float() - ref.float()).abs().max().item(), new_tokens
"""


def test_exercise_1_rejects_offsets_from_the_file_start():
    message = check_fails(SOLUTIONS, 1, WRONG_OFFSETS)
    assert "expected a well-formed file" in message, message


def test_exercise_1_rejects_an_unaligned_data_part():
    message = check_fails(SOLUTIONS, 1, WRONG_PADDING)
    assert "expected the data part to start at a multiple of 8" in message, message


@pytest.mark.slow  # generates with a bfloat16 model: over 10 s on 2 shared cores
def test_exercise_2_rejects_casting_the_model_in_place():
    message = check_fails(SOLUTIONS, 2, WRONG_IN_PLACE)
    assert "expected" in message and "got" in message, message


@pytest.mark.slow  # generates with a bfloat16 model: over 10 s on 2 shared cores
def test_exercise_2_rejects_a_drift_that_is_always_zero():
    message = check_fails(SOLUTIONS, 2, WRONG_SAME_DTYPE)
    assert "expected a bfloat16 drift of" in message, message
