"""Tests for the TensorFlow-free TensorBundle reader in ``torchspine.convert.tf_checkpoint``.

TensorFlow is not needed. The official fixtures carry their ``tf.train.list_variables`` output in ``meta.json``.
The small fixtures in ``fixtures/tf_checkpoint`` were written by TensorFlow from formulas in ``make_small.py``,
which this module imports (numpy only) to recompute the exact values. Corrupted inputs are built in ``tmp_path``.
"""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from torchspine.convert.tf_checkpoint import (
    CheckpointError,
    crc32c,
    list_variables,
    load_variables,
    resolve_checkpoint_prefix,
)

FIXTURES = Path(__file__).parent / "fixtures"
OFFICIAL = sorted(p for p in (FIXTURES / "official").iterdir() if (p / "meta.json").is_file())
SMALL_DIR = FIXTURES / "tf_checkpoint"
SMALL = SMALL_DIR / "small"
PARTITIONED = SMALL_DIR / "partitioned"
VARIABLES_KEY = "variables (tf.train.list_variables; dtype float32 unless given)"
MASK_DELTA = 0xA282EAD8


def _make_small():
    spec = importlib.util.spec_from_file_location("make_small", SMALL_DIR / "make_small.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


MAKE_SMALL = _make_small()


def _meta(fixture: Path) -> dict:
    return json.loads((fixture / "meta.json").read_text())


def _official_prefix(fixture: Path) -> Path:
    return fixture / _meta(fixture)["checkpoint"]["prefix"]


def _copy_checkpoint(prefix: Path, dest: Path) -> Path:
    """Copy a checkpoint's files into ``dest`` (writable), returning the new prefix."""
    dest.mkdir(parents=True, exist_ok=True)
    for path in prefix.parent.glob(f"{prefix.name}.*"):
        if path.suffix != ".py":
            shutil.copyfile(path, dest / path.name)
    return dest / prefix.name


def _masked(data: bytes) -> int:
    crc = crc32c(data)
    return (((crc >> 15) | (crc << 17)) + MASK_DELTA) & 0xFFFFFFFF


def _first_data_block(index: bytes) -> tuple[int, int]:
    """(offset, size) of the first data block, found by walking footer -> index block -> first entry."""

    def varint(buf: bytes, pos: int) -> tuple[int, int]:
        result = shift = 0
        while True:
            result |= (buf[pos] & 0x7F) << shift
            pos, shift = pos + 1, shift + 7
            if buf[pos - 1] < 0x80:
                return result, pos

    footer = index[-48:]
    pos = varint(footer, varint(footer, 0)[1])[1]  # skip the metaindex handle
    pos, _ = varint(footer, pos)  # index block offset
    _, pos = varint(index, pos)  # first index entry: shared key bytes,
    unshared, pos = varint(index, pos)  # unshared key bytes,
    _, pos = varint(index, pos)  # value length, then key and value (the data block handle)
    offset, pos = varint(index, pos + unshared)
    size, _ = varint(index, pos)
    return offset, size


def _rewrite_data_block(index_path: Path, old: bytes = b"", new: bytes = b"", compression: int = 0) -> None:
    """Edit the first data block of an index file and re-seal it with a valid trailer crc."""
    data = bytearray(index_path.read_bytes())
    offset, size = _first_data_block(bytes(data))
    block = bytes(data[offset : offset + size])
    if old:
        assert block.count(old) == 1 and len(old) == len(new)
        block = block.replace(old, new)
    block += bytes([compression])
    data[offset : offset + size + 5] = block + _masked(block).to_bytes(4, "little")
    index_path.write_bytes(bytes(data))


# --- crc32c ---------------------------------------------------------------------------------------------------


def _reference_table() -> list[int]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):  # bit by bit through the reflected Castagnoli polynomial
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
        table.append(crc)
    return table


REFERENCE_TABLE = _reference_table()


def _crc32c_reference(data: bytes) -> int:
    crc = 0xFFFFFFFF
    for byte in data:
        crc = (crc >> 8) ^ REFERENCE_TABLE[(crc ^ byte) & 0xFF]
    return crc ^ 0xFFFFFFFF


def test_crc32c_matches_published_vectors():
    # "123456789" is the standard check value; the 32-byte ones are from RFC 3720, appendix B.4.
    assert crc32c(b"123456789") == 0xE3069283
    assert crc32c(b"") == 0
    assert crc32c(bytes(32)) == 0x8A9136AA
    assert crc32c(b"\xff" * 32) == 0x62A8AB43
    assert crc32c(bytes(range(32))) == 0x46DD794E


# Sizes around the numpy lane layouts: 16384 lanes and 256 lanes of 4-byte words, then a byte loop.
@pytest.mark.parametrize("size", [1, 3, 4, 1023, 1024, 1025, 4 * 256 * 3 + 7, 4 * 16384 + 5, 4 * 16384 * 3 + 1029])
def test_crc32c_numpy_lanes_agree_with_byte_loop(size):
    data = np.random.default_rng(size).integers(0, 256, size, dtype=np.uint8)
    expected = _crc32c_reference(data.tobytes())
    assert crc32c(data) == expected
    assert crc32c(memoryview(data.tobytes())) == expected
    cut = size // 3  # continuing from a previous crc gives the crc of the concatenation
    assert crc32c(data[cut:], crc32c(data[:cut])) == expected


# --- official fixtures ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("fixture", OFFICIAL, ids=lambda p: p.name)
def test_official_list_variables_matches_meta(fixture):
    expected = _meta(fixture)["checkpoint"][VARIABLES_KEY]
    listing = list_variables(_official_prefix(fixture))
    assert list(listing) == [item["name"] for item in expected]  # same names, same (sorted) order
    dtype_map = {"float32": np.float32, "int64": np.int64, "string": object}
    for item in expected:
        shape, dtype = listing[item["name"]]
        assert shape == tuple(item["shape"]), item["name"]
        assert dtype == np.dtype(dtype_map[item.get("dtype", "float32")]), item["name"]


@pytest.mark.parametrize("fixture", OFFICIAL, ids=lambda p: p.name)
def test_official_load_variables_values(fixture):
    prefix = _official_prefix(fixture)
    listing = list_variables(prefix)
    arrays = load_variables(prefix)
    numeric = [name for name, (_, dtype) in listing.items() if dtype.kind != "O"]
    assert list(arrays) == numeric  # strings are left out unless asked for
    for name, array in arrays.items():
        assert array.shape == listing[name][0] and array.dtype == listing[name][1], name
        assert np.all(np.isfinite(array)), name
        assert array.flags.writeable, name  # torch.from_numpy warns on read-only arrays
    weights = [a for n, a in arrays.items() if n.endswith(("kernel/.ATTRIBUTES/VARIABLE_VALUE", "/kernel"))]
    assert weights and all(np.any(w != 0) for w in weights)  # random init, so no kernel is all zeros
    strings = [name for name, (_, dtype) in listing.items() if dtype.kind == "O"]
    for name, value in load_variables(prefix, strings).items():
        assert value.shape == () and isinstance(value.item(), bytes) and len(value.item()) > 1000, name


def test_fixture_index_blocks_are_uncompressed():
    """TF's BundleWriter sets kNoCompression; the reader rejects anything else, so reading them proves it."""
    for prefix in [*map(_official_prefix, OFFICIAL), SMALL, PARTITIONED]:
        data = Path(f"{prefix}.index").read_bytes()
        offset, size = _first_data_block(data)
        assert data[offset + size] == 0
        assert list_variables(prefix)


def test_resolve_checkpoint_prefix_accepts_prefix_files_and_folders():
    fixture = FIXTURES / "official" / "tpu_spinenet49_retinanet_tiny"
    prefix = fixture / "model.ckpt"
    for given in [prefix, str(prefix), fixture, f"{prefix}.index", f"{prefix}.data-00000-of-00001"]:
        assert resolve_checkpoint_prefix(given) == prefix


# --- small TF-written fixture with exact values ------------------------------------------------------------------


def test_small_checkpoint_exact_values():
    expected = MAKE_SMALL.expected_values()
    listing = list_variables(SMALL)
    assert set(listing) == {MAKE_SMALL.key(name) for name in expected} | {"_CHECKPOINTABLE_OBJECT_GRAPH"}
    arrays = load_variables(SMALL)  # two data shards
    assert set(arrays) == {MAKE_SMALL.key(name) for name in expected if name != "strings"}
    for name, value in expected.items():
        if name == "strings":
            continue
        array = arrays[MAKE_SMALL.key(name)]
        assert array.dtype == value.dtype and array.shape == value.shape, name
        assert array.tobytes() == value.tobytes(), name  # bitwise, including bfloat16 -> float32
        assert listing[MAKE_SMALL.key(name)] == (value.shape, value.dtype)
    strings = load_variables(SMALL, [MAKE_SMALL.key("strings")])[MAKE_SMALL.key("strings")]
    assert strings.dtype == object and strings.tolist() == expected["strings"].tolist()


def test_small_checkpoint_selected_names_keep_requested_order():
    names = [MAKE_SMALL.key("i64"), MAKE_SMALL.key("bf16"), "_CHECKPOINTABLE_OBJECT_GRAPH"]
    arrays = load_variables(SMALL, names)
    assert list(arrays) == names
    assert isinstance(arrays["_CHECKPOINTABLE_OBJECT_GRAPH"].item(), bytes)
    assert np.array_equal(arrays[names[0]], MAKE_SMALL.expected_values()["i64"])
    unchecked = load_variables(SMALL, names[:2], verify=False)
    assert all(np.array_equal(unchecked[n], arrays[n]) for n in names[:2])
    with pytest.raises(KeyError, match="no_such_variable"):
        load_variables(SMALL, ["no_such_variable"])


def test_partitioned_variable_is_listed_but_rejected_clearly():
    values = MAKE_SMALL.partitioned_values()
    assert list_variables(PARTITIONED) == {name: (v.shape, v.dtype) for name, v in values.items()}
    assert np.array_equal(load_variables(PARTITIONED, ["plain"])["plain"], values["plain"])
    with pytest.raises(CheckpointError, match=r"partitioned\.index.*'part'.*slices"):
        load_variables(PARTITIONED)


# --- corrupted and missing inputs -----------------------------------------------------------------------------


def test_truncated_data_file(tmp_path):
    prefix = _copy_checkpoint(SMALL, tmp_path)
    shard = Path(f"{prefix}.data-00001-of-00002")
    shard.write_bytes(shard.read_bytes()[:100])
    with pytest.raises(CheckpointError, match=r"small\.data-00001-of-00002: variable .* but the file has 100 bytes"):
        load_variables(prefix)


@pytest.mark.parametrize(("keep", "message"), [(-10, "bad magic number"), (30, "shorter than the 48-byte")])
def test_truncated_index_file(tmp_path, keep, message):
    prefix = _copy_checkpoint(SMALL, tmp_path)
    index = Path(f"{prefix}.index")
    index.write_bytes(index.read_bytes()[:keep])
    for call in (list_variables, load_variables):
        with pytest.raises(CheckpointError, match=rf"small\.index: .*{message}"):
            call(prefix)


def test_flipped_byte_in_data_file_fails_crc(tmp_path):
    prefix = _copy_checkpoint(SMALL, tmp_path)
    shard = Path(f"{prefix}.data-00000-of-00002")
    data = bytearray(shard.read_bytes())
    data[60] ^= 0x01  # inside f32 (offsets 56..151 in shard 0)
    shard.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=r"small\.data-00000-of-00002: variable 'f32/.*crc32c mismatch"):
        load_variables(prefix)
    corrupted = load_variables(prefix, verify=False)[MAKE_SMALL.key("f32")]  # verify=False reads it anyway
    assert not np.array_equal(corrupted, MAKE_SMALL.expected_values()["f32"])


def test_flipped_byte_in_string_tensor_fails_crc(tmp_path):
    prefix = _copy_checkpoint(SMALL, tmp_path)
    shard = Path(f"{prefix}.data-00001-of-00002")
    data = bytearray(shard.read_bytes())
    data[-5] ^= 0x40  # inside _CHECKPOINTABLE_OBJECT_GRAPH, the last entry of shard 1
    shard.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=r"_CHECKPOINTABLE_OBJECT_GRAPH.*crc32c mismatch"):
        load_variables(prefix, ["_CHECKPOINTABLE_OBJECT_GRAPH"])


def test_flipped_byte_in_index_block_fails_block_crc(tmp_path):
    prefix = _copy_checkpoint(SMALL, tmp_path)
    index = Path(f"{prefix}.index")
    data = bytearray(index.read_bytes())
    data[40] ^= 0x20
    index.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=r"small\.index: block at offset 0 fails its crc32c check"):
        list_variables(prefix)


def test_snappy_compressed_block_is_rejected(tmp_path):
    prefix = _copy_checkpoint(SMALL, tmp_path)
    _rewrite_data_block(Path(f"{prefix}.index"), compression=1)
    with pytest.raises(CheckpointError, match=r"small\.index: .*snappy"):
        list_variables(prefix)


def test_unknown_dtype_is_rejected(tmp_path):
    prefix = _copy_checkpoint(SMALL, tmp_path)
    # f32 follows f16 in key order, so its stored key is "32/..." and its entry starts with dtype=1 ("\x08\x01").
    stored = b"32/.ATTRIBUTES/VARIABLE_VALUE\x08"
    _rewrite_data_block(Path(f"{prefix}.index"), stored + b"\x01", stored + b"\x15")
    with pytest.raises(CheckpointError, match=r"small\.index: variable 'f32/.* unsupported DataType enum 21"):
        list_variables(prefix)


def test_missing_data_shard(tmp_path):
    prefix = _copy_checkpoint(SMALL, tmp_path)
    Path(f"{prefix}.data-00001-of-00002").unlink()
    assert len(list_variables(prefix)) == 11  # the index alone is still readable
    with pytest.raises(CheckpointError, match=r"small\.data-00001-of-00002: data shard missing"):
        load_variables(prefix)


def test_folder_without_checkpoint(tmp_path):
    (tmp_path / "notes.txt").write_text("nothing here")
    with pytest.raises(FileNotFoundError, match=f"no TensorFlow checkpoint in folder {re.escape(str(tmp_path))}"):
        resolve_checkpoint_prefix(tmp_path)
    with pytest.raises(FileNotFoundError, match=r"expected .*missing\.index"):
        load_variables(tmp_path / "missing")


def test_folder_with_two_checkpoints(tmp_path):
    _copy_checkpoint(SMALL, tmp_path)
    _copy_checkpoint(PARTITIONED, tmp_path)
    with pytest.raises(ValueError, match=r"holds 2 checkpoints \(partitioned\.index, small\.index\)"):
        list_variables(tmp_path)


def test_checkpoint_state_file_picks_the_prefix(tmp_path):
    _copy_checkpoint(SMALL, tmp_path)
    _copy_checkpoint(PARTITIONED, tmp_path)
    state = tmp_path / "checkpoint"
    state.write_text('model_checkpoint_path: "small"\nall_model_checkpoint_paths: "small"\n')
    assert resolve_checkpoint_prefix(tmp_path) == tmp_path / "small"
    # Absolute paths written on another machine fall back to the file name inside this folder.
    state.write_text('model_checkpoint_path: "/elsewhere/run7/partitioned"\n')
    assert resolve_checkpoint_prefix(state) == tmp_path / "partitioned"
    state.write_text('model_checkpoint_path: "gone"\n')
    with pytest.raises(FileNotFoundError, match=r"names checkpoint gone"):
        resolve_checkpoint_prefix(tmp_path)
