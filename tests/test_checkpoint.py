"""jaxbp.checkpoint: round trip, atomic writes, verification with errors naming the leaf."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxbp import checkpoint, optim


def _tree():
    params = ({"W": jnp.arange(6.0).reshape(2, 3), "b": jnp.ones(3)}, ())
    return {
        "params": params,
        "opt": optim.adam(0.1).init(params),
        "step": jnp.array(7, jnp.int32),
        "key": jax.random.key(3),
        "flags": jnp.array([True, False]),
    }


def test_round_trip_is_exact_including_prng_keys(tmp_path):
    tree = _tree()
    path = checkpoint.save(tmp_path, 7, tree, metadata={"history": [1.5, 2.5]})
    assert path.name == "ckpt-000000007.npz"
    restored, meta = checkpoint.load(path, like=tree)
    assert meta["step"] == 7 and meta["history"] == [1.5, 2.5]
    assert jax.tree.structure(restored) == jax.tree.structure(tree)
    for a, b in zip(jax.tree.leaves(restored), jax.tree.leaves(tree), strict=True):
        assert a.dtype == b.dtype and a.shape == b.shape
    np.testing.assert_array_equal(restored["params"][0]["W"], tree["params"][0]["W"])
    assert isinstance(restored["opt"], optim.AdamState)
    # the restored key draws the same numbers
    np.testing.assert_array_equal(
        jax.random.normal(restored["key"], (4,)), jax.random.normal(tree["key"], (4,))
    )


def test_latest_keep_and_stray_temporary_files(tmp_path):
    tree = _tree()
    (tmp_path / ".tmp-crashed.npz").write_bytes(b"half a file")  # a write that was killed
    assert checkpoint.latest(tmp_path) is None
    for step in (10, 20, 30, 40):
        checkpoint.save(tmp_path, step, tree, keep=2)
    assert [p.name for p in checkpoint.all_checkpoints(tmp_path)] == [
        "ckpt-000000030.npz",
        "ckpt-000000040.npz",
    ]
    assert checkpoint.latest(tmp_path).name == "ckpt-000000040.npz"
    assert not list(tmp_path.glob(".tmp-*"))  # cleaned up by the next save
    assert checkpoint.latest(tmp_path / "missing") is None


def test_mismatches_name_the_leaf(tmp_path):
    tree = _tree()
    path = checkpoint.save(tmp_path, 1, tree)
    bigger = {**tree, "params": ({"W": jnp.zeros((2, 4)), "b": jnp.ones(3)}, ())}
    with pytest.raises(checkpoint.CheckpointError, match=r"\['params'\]\[0\]\['W'\].*shape"):
        checkpoint.load(path, like=bigger)
    f32 = {
        **tree,
        "params": ({"W": tree["params"][0]["W"].astype(jnp.float32), "b": jnp.ones(3)}, ()),
    }
    with pytest.raises(checkpoint.CheckpointError, match=r"\['W'\].*dtype 'float64'.*'float32'"):
        checkpoint.load(path, like=f32)
    other_opt = {**tree, "opt": optim.sgd(0.1, momentum=0.9).init(tree["params"])}
    with pytest.raises(checkpoint.CheckpointError, match="leaves|path"):
        checkpoint.load(path, like=other_opt)
    no_key = {**tree, "key": jnp.zeros((2,), jnp.uint32)}
    with pytest.raises(checkpoint.CheckpointError, match=r"\['key'\].*kind"):
        checkpoint.load(path, like=no_key)


def test_corrupted_or_truncated_files_are_refused(tmp_path):
    tree = _tree()
    path = checkpoint.save(tmp_path, 1, tree)
    raw = path.read_bytes()
    truncated = tmp_path / "ckpt-000000002.npz"
    truncated.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(checkpoint.CheckpointError, match="cannot be read"):
        checkpoint.load(truncated, like=tree)
    # flip bytes inside the stored W array (uncompressed npz: find its float64 bytes)
    w_bytes = np.asarray(tree["params"][0]["W"]).tobytes()
    at = raw.index(w_bytes)
    flipped = raw[:at] + bytes([raw[at] ^ 0xFF]) + raw[at + 1 :]
    bad = tmp_path / "ckpt-000000003.npz"
    bad.write_bytes(flipped)
    with pytest.raises(checkpoint.CheckpointError, match=r"\['W'\].*corrupted"):
        checkpoint.load(bad, like=tree)


@pytest.mark.parametrize(
    "content, reason",
    [
        (b"hello, not a checkpoint\n", "not an .npz"),
        (b"\x93NUMPY\x01\x00v\x00{'descr': '|O', 'fortran_order': False, 'shape': (1,), }", "npz"),
        (b"", "not an .npz"),
    ],
)
def test_a_file_that_is_not_a_checkpoint_is_named_so_and_pickling_is_never_suggested(
    tmp_path, content, reason
):
    path = tmp_path / "notes.npz"
    path.write_bytes(content)
    with pytest.raises(checkpoint.CheckpointError, match="not a jaxbp checkpoint") as info:
        checkpoint.load(path, like=_tree())
    assert reason in str(info.value)
    assert "pickle" not in str(info.value).lower()


def test_an_npz_archive_without_metadata_or_with_pickled_entries_is_not_a_checkpoint(tmp_path):
    plain = tmp_path / "plain.npz"
    np.savez(plain, a=np.arange(3))
    with pytest.raises(checkpoint.CheckpointError, match="not a jaxbp checkpoint.*__meta__"):
        checkpoint.load(plain, like=_tree())
    pickled = tmp_path / "pickled.npz"
    np.savez(pickled, __meta__=np.array([{"format": "x"}], dtype=object))
    with pytest.raises(checkpoint.CheckpointError, match="not a jaxbp checkpoint") as info:
        checkpoint.read_metadata(pickled)
    assert "allow_pickle" not in str(info.value) and "pickle.load" not in str(info.value)
