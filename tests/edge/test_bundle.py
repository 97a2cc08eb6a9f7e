"""Bundle signing and verification: every way a bundle can be wrong is refused, naming why."""

import json

import numpy as np
import pytest

from edge.bundle import BundleError, init_keys, load_public_key, verify_bundle


def test_a_signed_bundle_verifies_and_lists_every_file_with_its_hash(edge_bundle, signing_keys):
    manifest = verify_bundle(edge_bundle, load_public_key(signing_keys[1]))
    assert manifest["model_version"] == "7" and manifest["tier"] == "edge"
    assert set(manifest["files"]) == {
        "model.onnx",
        "candidates.npz",
        "catalog.npz",
        "histories.npz",
        "items.npz",
        "co_purchase.npz",
        "serving.json",
    }
    assert all(len(digest) == 64 for digest in manifest["files"].values())
    assert manifest["created_at"] and manifest["data_hash"]


def test_a_changed_file_is_refused_by_name(bundle_copy, signing_keys):
    with open(bundle_copy / "model.onnx", "r+b") as f:
        f.seek(200)
        byte = f.read(1)
        f.seek(200)
        f.write(bytes([byte[0] ^ 0xFF]))
    with pytest.raises(BundleError, match="model.onnx does not match its SHA-256"):
        verify_bundle(bundle_copy, load_public_key(signing_keys[1]))


def test_an_edited_manifest_is_refused(bundle_copy, signing_keys):
    manifest = json.loads((bundle_copy / "manifest.json").read_text())
    manifest["model_version"] = "999"
    (bundle_copy / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True))
    with pytest.raises(BundleError, match="does not verify manifest.json"):
        verify_bundle(bundle_copy, load_public_key(signing_keys[1]))


def test_a_bundle_signed_with_another_key_is_refused(edge_bundle, tmp_path):
    _, other_public = init_keys(tmp_path / "other")
    with pytest.raises(BundleError, match="against this node's public key"):
        verify_bundle(edge_bundle, load_public_key(other_public))


def test_a_missing_or_unlisted_file_is_refused(bundle_copy, signing_keys):
    key = load_public_key(signing_keys[1])
    (bundle_copy / "extra.py").write_text("print('hi')")
    with pytest.raises(BundleError, match="not in the manifest: extra.py"):
        verify_bundle(bundle_copy, key)
    (bundle_copy / "extra.py").unlink()
    (bundle_copy / "histories.npz").unlink()
    with pytest.raises(BundleError, match="histories.npz is missing"):
        verify_bundle(bundle_copy, key)


def test_keys_are_not_overwritten_by_accident(tmp_path):
    private, _ = init_keys(tmp_path)
    assert oct(private.stat().st_mode & 0o777) == "0o600"
    with pytest.raises(FileExistsError):
        init_keys(tmp_path)


def test_the_co_purchase_table_pairs_items_bought_together():
    from models.baskets import BasketHistory
    from models.tier_bundle import co_purchase_table

    # items 0 and 1 share three baskets, 0 and 2 one (below the 2-basket minimum)
    baskets = [np.array([0, 1]), np.array([0, 1]), np.array([0, 1, 2]), np.array([3])]
    table = co_purchase_table(BasketHistory.single_user(baskets, np.arange(4.0), 4), n=2)
    assert table[0].tolist() == [1, -1] and table[1].tolist() == [0, -1] and table[3].tolist() == [-1, -1]
