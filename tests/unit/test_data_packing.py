"""minillm.data: token files on disk (pack_tokens, load_tokens) and batches (get_batch)."""

from __future__ import annotations

import json
import tracemalloc

import numpy as np
import pytest
import torch

from minillm.data import get_batch, load_tokens, pack_tokens, read_token_sidecar, token_dtype


def test_token_dtype_boundaries():
    assert token_dtype(256) == np.uint16
    assert token_dtype(65_536) == np.uint16  # ids 0..65535 fit
    assert token_dtype(65_537) == np.uint32
    with pytest.raises(ValueError, match=r"\[1, 2\*\*32\]"):
        token_dtype(0)
    with pytest.raises(TypeError, match="int"):
        token_dtype(256.0)


@pytest.mark.parametrize(("vocab_size", "dtype"), [(256, "uint16"), (100_000, "uint32")])
def test_pack_and_load_round_trip(tmp_path, vocab_size, dtype):
    ids = np.random.default_rng(0).integers(0, vocab_size, size=5000)
    path = pack_tokens(ids, tmp_path / "train.bin", vocab_size, metadata={"tokenizer": "bytes"})
    assert path == tmp_path / "train.bin"
    assert path.stat().st_size == 5000 * np.dtype(dtype).itemsize
    sidecar = json.loads((tmp_path / "train.json").read_text())
    assert sidecar == {
        "format": "minillm.tokens",
        "version": 1,
        "dtype": dtype,
        "byteorder": "little",
        "vocab_size": vocab_size,
        "num_tokens": 5000,
        "metadata": {"tokenizer": "bytes"},
    }
    tokens = load_tokens(path)
    assert isinstance(tokens, np.memmap) and tokens.dtype == np.dtype(dtype)
    assert np.array_equal(tokens, ids)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "train.bin",
        "train.json",
    ]  # no temp files


def test_pack_accepts_lists_tensors_and_streams(tmp_path, monkeypatch):
    monkeypatch.setattr("minillm.data.packing._CHUNK_TOKENS", 7)  # force several chunks
    expected = list(range(50)) * 3
    for i, ids in enumerate(
        [expected, torch.tensor(expected), iter(expected), (x for x in expected)]
    ):
        path = pack_tokens(ids, tmp_path / f"s{i}.bin", 50)
        assert load_tokens(path).tolist() == expected


def test_pack_rejects_bad_ids(tmp_path, monkeypatch):
    monkeypatch.setattr("minillm.data.packing._CHUNK_TOKENS", 4)
    with pytest.raises(ValueError, match=r"id 300 at position 5 is outside \[0, 256\)"):
        pack_tokens([1, 2, 3, 4, 5, 300, 6], tmp_path / "x.bin", 256)
    with pytest.raises(ValueError, match="id -1 at position 0"):
        pack_tokens(np.array([-1, 3]), tmp_path / "x.bin", 256)
    with pytest.raises(ValueError, match="empty"):
        pack_tokens([], tmp_path / "x.bin", 256)
    with pytest.raises(TypeError, match="integers"):
        pack_tokens([1.5, 2.0], tmp_path / "x.bin", 256)
    with pytest.raises(TypeError, match="iterable of ints"):
        pack_tokens("abc", tmp_path / "x.bin", 256)
    with pytest.raises(ValueError, match="one-dimensional"):
        pack_tokens(np.zeros((2, 2), dtype=np.int64), tmp_path / "x.bin", 256)
    with pytest.raises(ValueError, match=r"must end in \.bin"):
        pack_tokens([1], tmp_path / "x.npy", 256)
    assert list(tmp_path.iterdir()) == []  # failed writes leave nothing behind


def test_pack_replaces_an_existing_file_atomically(tmp_path):
    pack_tokens([1, 2, 3], tmp_path / "t.bin", 10)
    with pytest.raises(ValueError):
        pack_tokens([1, 99], tmp_path / "t.bin", 10)
    assert load_tokens(tmp_path / "t.bin").tolist() == [1, 2, 3]  # the old pair is intact
    pack_tokens([4, 5], tmp_path / "t.bin", 10)
    assert load_tokens(tmp_path / "t.bin").tolist() == [4, 5]


def test_load_tokens_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no token file"):
        load_tokens(tmp_path / "missing.bin")
    path = pack_tokens(list(range(10)), tmp_path / "t.bin", 10)
    with open(path, "ab") as f:
        f.write(b"\x00")
    with pytest.raises(ValueError, match="truncated or corrupt"):
        load_tokens(path)
    meta = read_token_sidecar(path)
    (tmp_path / "t.json").write_text(json.dumps({**meta, "version": 2}))
    with pytest.raises(ValueError, match="version 2"):
        load_tokens(path)
    (tmp_path / "t.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        load_tokens(path)
    (tmp_path / "t.json").unlink()
    with pytest.raises(FileNotFoundError, match="sidecar"):
        load_tokens(path)


@pytest.fixture
def packed(tmp_path):
    ids = np.arange(1000)  # distinct ids: a window's first id is its start position
    return load_tokens(pack_tokens(ids, tmp_path / "tokens.bin", 1000)), ids


def test_get_batch_windows_are_shifted_slices(packed):
    tokens, ids = packed
    x, y = get_batch(tokens, 8, 16, generator=torch.Generator().manual_seed(0))
    assert x.shape == y.shape == (8, 16) and x.dtype == y.dtype == torch.int64
    assert torch.equal(x[:, 1:], y[:, :-1])  # y is x shifted by one
    for row_x, row_y in zip(x, y, strict=True):
        start = int(row_x[0])
        assert np.array_equal(row_x.numpy(), ids[start : start + 16])
        assert np.array_equal(row_y.numpy(), ids[start + 1 : start + 17])
    assert len(set(x[:, 0].tolist())) > 1  # windows start at different places


def test_get_batch_is_reproducible_with_a_seeded_generator(packed):
    tokens, _ = packed
    first = get_batch(tokens, 4, 32, generator=torch.Generator().manual_seed(42))
    second = get_batch(tokens, 4, 32, generator=torch.Generator().manual_seed(42))
    other = get_batch(tokens, 4, 32, generator=torch.Generator().manual_seed(43))
    assert all(torch.equal(a, b) for a, b in zip(first, second, strict=True))
    assert not torch.equal(first[0], other[0])


def test_get_batch_reaches_the_last_token_and_accepts_tensors():
    ids = torch.arange(5)
    seen = set()
    generator = torch.Generator().manual_seed(0)
    for _ in range(50):
        x, y = get_batch(ids, 2, 4, generator=generator, device="cpu")
        seen.update(y[:, -1].tolist())
    assert seen == {4}  # block_size 4 of 5 tokens: the only window is 0..3 -> 1..4
    x, y = get_batch(np.arange(3, dtype=np.uint16), 1, 2)
    assert x.tolist() == [[0, 1]] and y.tolist() == [[1, 2]]


def test_get_batch_reads_only_the_windows_of_a_large_memmap(tmp_path):
    n_tokens = 32 * 2**20  # 64 MiB of uint16 on disk (a sparse file), 256 MiB as int64
    path = tmp_path / "big.bin"
    with open(path, "wb") as f:
        f.truncate(n_tokens * 2)
    (tmp_path / "big.json").write_text(
        json.dumps(
            {
                "format": "minillm.tokens",
                "version": 1,
                "dtype": "uint16",
                "vocab_size": 256,
                "num_tokens": n_tokens,
            }
        )
    )
    tokens = load_tokens(path)
    assert isinstance(tokens, np.memmap)
    tracemalloc.start()
    try:
        x, _ = get_batch(tokens, 16, 128, generator=torch.Generator().manual_seed(0))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert x.shape == (16, 128)
    assert peak < 2**20  # a full read would allocate at least 64 MiB


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        (
            {"block_size": 1000},
            ValueError,
            r"block_size \(1000\) must be smaller than the number of tokens \(1000\)",
        ),
        ({"block_size": 0}, ValueError, "block_size must be a positive int"),
        ({"batch_size": 0}, ValueError, "batch_size must be a positive int"),
        ({"batch_size": 2.0}, ValueError, "batch_size must be a positive int"),
    ],
)
def test_get_batch_bad_sizes(packed, kwargs, error, match):
    tokens, _ = packed
    arguments = {"batch_size": 2, "block_size": 8, **kwargs}
    with pytest.raises(error, match=match):
        get_batch(tokens, **arguments)


def test_get_batch_bad_tokens():
    with pytest.raises(TypeError, match="numpy array, memmap or torch tensor"):
        get_batch(list(range(100)), 2, 8)
    with pytest.raises(ValueError, match="one-dimensional"):
        get_batch(np.zeros((10, 10)), 2, 4)
