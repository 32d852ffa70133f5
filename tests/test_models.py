"""The model zoo: shapes, identity at init, contract helpers, parameter counts (vs README)."""

import math
import pathlib
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from stn_jax import models
from stn_jax.models.helpers import _shapes

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"
COLUMNS = [("fcn", "affine"), ("cnn", "affine"), ("st-fcn", "affine"), ("st-fcn", "projective"),
           ("st-fcn", "tps"), ("st-cnn", "affine"), ("st-cnn", "projective"), ("st-cnn", "tps"),
           ("2st-fcn", "affine")]


def _readme_counts():
    text = README.read_text()
    block = text.split("<!-- zoo-param-counts -->")[1].split("<!-- /zoo-param-counts -->")[0]
    rows = {}
    for line in block.strip().splitlines()[2:]:
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        rows[cells[0]] = [None if c == "—" else int(c.replace(",", "")) for c in cells[1:]]
    return rows


def test_parameter_counts_match_readme():
    rows = _readme_counts()
    assert set(rows) == {"r", "rts", "tc", "addition"}
    for dataset, counts in rows.items():
        assert len(counts) == len(COLUMNS)
        for (name, transform), expected in zip(COLUMNS, counts, strict=True):
            if expected is None:
                continue
            model = models.create_model(name, dataset=dataset, transform=transform)
            got = models.count_params(_shapes(model, dataset))
            assert got == expected, (dataset, name, transform)


def test_comparable_models_have_similar_counts():
    for dataset in ("r", "p", "e", "rts", "tc", "addition"):
        budget = models.budget(dataset)
        for name in ("fcn", "st-fcn"):
            for transform in ("affine", "projective", "tps"):
                model = models.create_model(name, dataset=dataset, transform=transform)
                got = models.count_params(_shapes(model, dataset))
                assert abs(got - budget) / budget < 0.01
        for name in ("cnn", "st-cnn"):  # the paper architecture matches CNNs too, uncapped
            got = models.count_params(_shapes(models.create_model(name, dataset=dataset), dataset))
            assert abs(got - budget) / budget < 0.01, (dataset, name, got, budget)
    r = models.budget("r")
    for name in ("cnn", "st-cnn"):  # the padded architecture caps the CNN's second conv
        model = models.create_model(name, dataset="r", architecture="padded")
        assert (model if name == "cnn" else model.classifier).features[1] == models.zoo.CNN_C2_CAP
        got = models.count_params(_shapes(model, "r"))
        assert 0.6 < got / r <= 1.01


@pytest.mark.parametrize("dataset, expected", [("r", 2), ("rts", 1), ("tc", 3), ("addition", 1)])
def test_paper_cnn_uses_valid_convs_and_the_st_cnn_localizes_on_half_resolution(dataset, expected):
    """'VALID' 9x9/7x7 convs with rounding-up pools: 28 -> 20 -> 10 -> 4 -> 2; the ST-CNN's
    classifier on RTS sees 21 -> 13 -> 7 -> 1 -> 1, on TC 30 -> 22 -> 11 -> 5 -> 3."""
    spec = models.DATASET_SPECS[dataset]
    x = jnp.zeros((1,) + spec.input_shape)
    model = models.create_model("st-cnn", dataset=dataset)
    params = _shapes(model, dataset)["params"]
    dense = params["classifier"]["Dense_0"]["kernel"]
    assert dense.shape[0] == expected * expected * model.classifier.features[1]
    loc = params["transformer"]["localization"]["net"]
    # two 5x5 'SAME' convs with pools on the half-resolution input, then dense 20
    half = [math.ceil(n / 4) for n in (spec.input_shape[0] // 2, spec.input_shape[1] // 2)]
    assert loc["Dense_0"]["kernel"].shape[0] == half[0] * half[1] * 20
    padded = _shapes(models.create_model("st-cnn", dataset=dataset, architecture="padded"), dataset)
    assert "net" not in padded["params"]["transformer"]["localization"]
    logits = model.apply(model.init(jax.random.key(0), x, train=False), x, train=False)
    assert logits.shape == (1, spec.num_classes)


@pytest.mark.parametrize("factor", [1, 4])
def test_loc_downsample_sets_the_localization_input_and_keeps_the_budget(factor):
    """st-cnn on TC with the localization net on a full-resolution (1) or 4x pooled input: its
    dense layer sees ceil(60/f/4)^2 x 20 features, the classifier's c2 is re-solved to the budget."""
    model = models.create_model("st-cnn", dataset="tc", loc_downsample=factor)
    params = _shapes(model, "tc")["params"]
    loc = params["transformer"]["localization"]
    loc = loc["net"] if factor > 1 else loc
    assert ("net" in params["transformer"]["localization"]) == (factor > 1)
    side = math.ceil(60 // factor / 4)
    assert loc["Dense_0"]["kernel"].shape[0] == side * side * 20
    default = models.create_model("st-cnn", dataset="tc")
    assert (model.classifier.features[1] < default.classifier.features[1]) == (factor == 1)
    got = models.count_params(params)
    assert abs(got / models.budget("tc") - 1) < 0.01
    # the default is the architecture's: 2 for paper, 1 for padded
    assert models.create_model("st-cnn", dataset="tc", loc_downsample=2).classifier.features == \
        default.classifier.features


def test_downsampled_localization_sees_the_pooled_input():
    x = jax.random.uniform(jax.random.key(0), (2, 8, 8, 1))
    probe = models.zoo.Downsampled(net=_Identity())
    np.testing.assert_allclose(probe.apply({}, x),
                               x.reshape(2, 4, 2, 4, 2, 1).mean(axis=(2, 4)), rtol=1e-6)


class _Identity(__import__("flax").linen.Module):
    def __call__(self, x):
        return x


def test_valid_conv_larger_than_input_is_a_clear_error():
    cnn = models.CNN(features=(2, 2), kernel_sizes=(9, 7), padding="VALID")
    with pytest.raises(ValueError, match="7x7 'VALID' conv needs at least"):
        cnn.init(jax.random.key(0), jnp.zeros((1, 12, 12, 1)))
    with pytest.raises(ValueError, match="padding must be"):
        models.CNN(padding="same").init(jax.random.key(0), jnp.zeros((1, 28, 28, 1)))


@pytest.mark.parametrize("name, dataset, transform", [
    ("fcn", "r", "affine"), ("st-fcn", "rts", "tps"), ("st-cnn", "r", "projective"),
    ("2st-fcn", "addition", "affine")])
def test_forward_shapes_dtypes_and_dropout(name, dataset, transform):
    spec = models.DATASET_SPECS[dataset]
    x = jax.random.uniform(jax.random.key(0), (2,) + spec.input_shape)
    model = models.create_model(name, dataset=dataset, transform=transform, dropout_rate=0.5)
    variables = jax.jit(lambda k: model.init(k, x, train=False))(jax.random.key(1))
    apply = jax.jit(lambda v, x, k: model.apply(v, x, train=True, rngs={"dropout": k}))
    logits = apply(variables, x, jax.random.key(2))
    assert logits.shape == (2, spec.num_classes) and logits.dtype == jnp.float32
    assert bool(jnp.all(jnp.isfinite(logits)))
    # train=True uses dropout: different keys give different logits
    assert float(jnp.abs(logits - apply(variables, x, jax.random.key(3))).max()) > 0


def test_inspect_transformers_and_penalty():
    spec = models.DATASET_SPECS["addition"]
    x = jax.random.uniform(jax.random.key(0), (2,) + spec.input_shape)
    model = models.create_model("2st-fcn", dataset="addition", transform="attention")
    variables = model.init(jax.random.key(1), x, train=False)
    found = models.inspect_transformers(model, variables, x)
    assert [f["kind"] for f in found] == ["attention", "attention"]
    for f in found:
        assert f["params"].shape == (2, 3) and f["grid"].shape == (2, 42, 42, 2)
        assert f["warped"].shape == (2, 42, 42, 2)
    assert float(jnp.abs(found[0]["params"] - found[1]["params"]).max()) > 0.1
    _, state = model.apply(variables, x, train=False, mutable=["intermediates"])
    assert float(models.transform_penalty(state["intermediates"])) == 0.0
    fcn = models.create_model("fcn", dataset="addition")
    assert models.inspect_transformers(fcn, fcn.init(jax.random.key(0), x, train=False), x) == []


def test_apply_and_inspect_returns_the_output_and_the_records_of_one_pass():
    x = jax.random.uniform(jax.random.key(0), (3, 28, 28, 1))
    model = models.create_model("st-fcn", dataset="r", transform="affine")
    variables = model.init(jax.random.key(1), x, train=False)
    variables = {"params": jax.tree.map(lambda p: p + 0.05, variables["params"])}   # leave the identity
    logits, found = models.apply_and_inspect(model, variables, x)
    assert [f["kind"] for f in found] == ["affine"]
    np.testing.assert_allclose(logits, model.apply(variables, x, train=False), rtol=1e-5, atol=1e-5)
    (expected,) = models.inspect_transformers(model, variables, x)
    assert float(jnp.abs(expected["params"] - jnp.asarray([1, 0, 0, 0, 1, 0.0])).max()) > 0.01
    np.testing.assert_allclose(found[0]["params"], expected["params"], rtol=1e-5, atol=1e-6)

    @jax.jit
    def logits_and_params(v, x):                 # traceable; the str "kind" stays outside jit
        out, records = models.apply_and_inspect(model, v, x)
        return out, records[0]["params"]

    jitted_logits, jitted_params = logits_and_params(variables, x)
    np.testing.assert_allclose(jitted_logits, logits, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(jitted_params, expected["params"], rtol=1e-5, atol=1e-6)


def test_st_model_warps_identity_at_init():
    x = jax.random.uniform(jax.random.key(0), (2, 28, 28, 1))
    model = models.create_model("st-cnn", dataset="r", transform="tps")
    variables = model.init(jax.random.key(1), x, train=False)
    (found,) = models.inspect_transformers(model, variables, x)
    assert found["kind"] == "tps" and found["params"].shape == (2, 32)
    np.testing.assert_allclose(found["warped"], x, atol=1e-5)


def test_is_localization_path_selects_transformer_parameters():
    model = models.create_model("st-cnn", dataset="r")
    params = _shapes(model, "r")["params"]
    flat = {tuple(getattr(k, "key", k) for k in path): leaf
            for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]}
    loc = [p for p in flat if models.is_localization_path(p)]
    rest = [p for p in flat if not models.is_localization_path(p)]
    assert loc and rest
    assert all(p[0] == "transformer" for p in loc)
    assert all(p[0] == "classifier" for p in rest)
    assert models.is_localization_path(("transformer", "head_1", "regression", "bias"))
    assert not models.is_localization_path(("classifier", "Dense_0", "kernel"))


def test_summary_reports_total():
    text = models.summary("st-fcn", "rts", "affine")
    total = models.count_params(_shapes(models.create_model("st-fcn", dataset="rts"), "rts"))
    assert f"{total:,} params" in text and "localization + regression" in text
    assert re.search(r"transformer/regression/kernel", text)


def test_bfloat16_model_runs():
    x = jax.random.uniform(jax.random.key(0), (2, 28, 28, 1))
    model = models.create_model("st-fcn", dataset="r", dtype=jnp.bfloat16)
    variables = model.init(jax.random.key(1), x, train=False)
    logits = model.apply(variables, x, train=False)
    assert logits.dtype == jnp.float32 and bool(jnp.all(jnp.isfinite(logits)))


@pytest.mark.parametrize("kwargs, match", [
    (dict(name="2st-fcn", dataset="r"), "addition"),
    (dict(name="st-cnn", dataset="r", transform="rotation"), "unknown transform kind"),
    (dict(name="st-fcn", dataset="r", transform="tps", num_control_points=10), "perfect square"),
    (dict(name="resnet", dataset="r"), "unknown model"),
    (dict(name="cnn", dataset="svhn"), "unknown dataset"),
    (dict(name="cnn", dataset="r", widths=3), "unknown create_model option"),
    (dict(name="cnn", dataset="r", hidden=(3, 3)), "features"),
    (dict(name="st-fcn", dataset="r", output_size=(4,)), "output_size"),
    (dict(name="cnn", dataset="r", architecture="lenet"), "unknown architecture"),
    (dict(name="st-fcn", dataset="r", loc_downsample=2), "st-cnn localization net only"),
    (dict(name="st-cnn", dataset="r", loc_downsample=0), "loc_downsample must be a positive integer"),
    (dict(name="st-cnn", dataset="r", loc_downsample=1.5), "loc_downsample must be a positive integer"),
])
def test_bad_configuration_raises(kwargs, match):
    with pytest.raises(ValueError, match=match):
        models.create_model(kwargs.pop("name"), **kwargs)


def test_cli_prints_summaries(capsys):
    from stn_jax.cli import main
    assert main(["models", "--dataset", "addition", "--brief"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == len(models.MODEL_NAMES)
    assert lines[-1].startswith("2st-fcn[affine] on addition") and "471,281 params" in lines[-1]
