"""The step functions: values, threshold semantics, straight-through gradients, resolution."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from conftest import grad, numpy
from keras_ssm import masks

pytestmark = pytest.mark.core

SCORES = np.array([-0.9, -0.5, -0.49, -0.1, 0.0, 0.2, 0.5, 0.51, 1.3], dtype="float32")


def test_signed_values_and_threshold_band() -> None:
    # |s| <= tau is hidden (the band is closed), beyond it the sign of s decides.
    out = numpy(masks.SignedMask(0.4)(keras.ops.convert_to_tensor(SCORES), {"tau": 0.5}))
    assert out.tolist() == [-1, 0, 0, 0, 0, 0, 0, 1, 1]


def test_signed_step_on_every_float_class() -> None:
    """``[s > tau] - [s < -tau]`` at +-tau and their float neighbours, at +-0, +-inf and tiny
    values, and on random scores: the band is closed, the result is exactly -1, +0 or 1 (never
    -0.0), and a NaN score is hidden (see ``test_documented_non_errors``)."""
    tau = np.float32(0.37)
    edges = [tau, -tau, np.nextafter(tau, 1), np.nextafter(-tau, -1), np.nextafter(tau, 0)]
    edges += [np.nextafter(-tau, 0), 0.0, -0.0, np.inf, -np.inf, 1e-38, -1e-38, np.nan]
    rng = np.random.default_rng(0)
    s = np.concatenate([np.float32(edges), rng.normal(scale=0.5, size=4096).astype("float32")])
    got = numpy(masks.SignedMask(0.4)(keras.ops.convert_to_tensor(s), {"tau": tau}))
    want = np.where(np.abs(s) > tau, np.sign(s), 0.0).astype("float32")
    np.testing.assert_array_equal(got, want)
    assert not np.signbit(got[got == 0]).any()
    assert got[:13].tolist() == [0, 0, 1, -1, 0, 0, 0, 0, 1, -1, 0, 0, 0]


def test_topk_keeps_the_top_share_of_magnitudes() -> None:
    out = numpy(masks.TopKMask(k=3 / 9)(keras.ops.convert_to_tensor(SCORES), {}))
    assert out.tolist() == [1, 0, 0, 0, 0, 0, 0, 1, 1]
    assert set(np.unique(out)) <= {0.0, 1.0}


def test_binary_inference_is_deterministic_threshold_at_zero() -> None:
    out = numpy(masks.BinaryMask()(keras.ops.convert_to_tensor(SCORES), {}, training=False))
    assert out.tolist() == (SCORES > 0).astype("float32").tolist()


def test_binary_training_samples_bernoulli_of_sigmoid() -> None:
    scores = np.full((200, 200), 0.8472979, dtype="float32")  # sigmoid = 0.7
    state = {"seed_generator": keras.random.SeedGenerator(7)}
    out = numpy(masks.BinaryMask()(keras.ops.convert_to_tensor(scores), state, training=True))
    np.testing.assert_allclose(out.mean(), 0.7, atol=0.01)
    assert set(np.unique(np.round(out, 5))) <= {0.0, 1.0}


@pytest.mark.parametrize(
    "mask, state",
    [(masks.SignedMask(0.4), {"tau": 0.5}), (masks.TopKMask(k=0.3), {})],
    ids=["signed", "topk"],
)
def test_straight_through_gradient_is_identity(mask: masks.Mask, state: dict) -> None:
    upstream = np.linspace(-2, 2, SCORES.size).astype("float32")
    g = grad(lambda s: keras.ops.sum(mask(s, state, training=True) * upstream), SCORES)
    np.testing.assert_array_equal(g, upstream)


def test_binary_gradient_is_sigmoid_derivative() -> None:
    upstream = np.linspace(-2, 2, SCORES.size).astype("float32")
    state = {"seed_generator": keras.random.SeedGenerator(3)}
    mask = masks.BinaryMask()
    g = grad(lambda s: keras.ops.sum(mask(s, state, training=True) * upstream), SCORES)
    sig = 1 / (1 + np.exp(-SCORES))
    np.testing.assert_allclose(g, upstream * sig * (1 - sig), rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("name", masks.ALLOWED)
def test_get_resolves_strings_dicts_and_instances(name: str) -> None:
    mask = masks.get(name)
    assert mask.name == name
    assert masks.get(masks.serialize(mask)) == mask
    assert masks.get(mask) is mask
    assert masks.get(name.upper()).name == name


def test_get_merges_overrides() -> None:
    assert masks.get("signed", threshold=0.6).threshold == 0.6
    assert masks.get({"class_name": "topk", "config": {"k": 0.2}}).k == 0.2
    assert masks.get(masks.SignedMask(0.3), threshold=0.5).threshold == 0.5


def test_unknown_mask_names_the_allowed_ones() -> None:
    with pytest.raises(ValueError, match=r"Unknown mask 'tenary'.*signed, binary, topk"):
        masks.get("tenary")
    with pytest.raises(ValueError, match="Could not interpret mask identifier"):
        masks.get(42)


@pytest.mark.parametrize("bad", [0, 1, 1.0, -0.1, 1.5, "0.4", True, None, float("nan")])
def test_threshold_outside_open_unit_interval_is_rejected(bad: object) -> None:
    with pytest.raises(ValueError, match=r"threshold.*\(0, 1\)"):
        masks.SignedMask(bad)


@pytest.mark.parametrize("bad", [0, -0.5, 1.01, "all"])
def test_topk_fraction_is_validated(bad: object) -> None:
    with pytest.raises(ValueError, match=r"`k` must be a number in \(0, 1\]"):
        masks.TopKMask(k=bad)


def test_mask_arguments_are_validated_by_name() -> None:
    with pytest.raises(ValueError, match="its arguments are: threshold"):
        masks.get("signed", k=0.4)


def test_allowed_is_the_registered_names_built_ins_first() -> None:
    assert isinstance(masks.ALLOWED, tuple)
    assert masks.ALLOWED[:3] == ("signed", "binary", "topk")
    assert all(type(masks.get(name)).name == name for name in masks.ALLOWED)
    with pytest.raises(AttributeError, match="has no attribute 'ALLOWD'"):
        masks.ALLOWD  # noqa: B018


def test_built_in_masks_are_keras_serializables() -> None:
    for cls in (masks.SignedMask, masks.BinaryMask, masks.TopKMask):
        assert keras.saving.get_registered_object(f"keras_ssm.masks>{cls.name}") is cls
        mask = cls()
        assert (
            keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(mask)) == mask
        )
