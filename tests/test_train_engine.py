"""Training engine pieces: config, optimiser, pure steps and the data-parallel step."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _train_helpers import SHAPE, TinyDataset, TinySTN, is_loc

from stn_jax.train import TrainConfig, create_state, eval_step, make_optimizer, make_schedule, parallel, train_step
from stn_jax.train.optim import localization_mask


def _setup(config: TrainConfig, batch: int = 16):
    model = TinySTN()
    params = model.init(jax.random.PRNGKey(0), jnp.zeros((1, *SHAPE)), train=False)["params"]
    state = create_state(model, params, make_optimizer(config, params, is_localization=is_loc))
    images, labels = TinyDataset().train_batch(jax.random.PRNGKey(1), batch)
    return state, images, labels


def _loc_leaves(params):
    return [params["st"]["localization"], params["st"]["regression"]]


def test_one_step_decreases_loss_and_moves_localization():
    config = TrainConfig(lr=0.1, momentum=0.0, loc_lr_mult=0.1)
    state, images, labels = _setup(config)
    step = jax.jit(train_step)
    key = jax.random.PRNGKey(2)
    score = jax.jit(lambda p: eval_step(state.apply_fn, p, images, labels, jnp.ones(16, bool)))
    before = score(state.params)
    new_state, metrics = step(state, images, labels, key)
    after = score(new_state.params)
    assert bool(metrics["finite"]) and int(new_state.step) == 1
    assert float(after["loss_sum"]) < float(before["loss_sum"])
    moved = jax.tree.map(lambda a, b: float(jnp.max(jnp.abs(a - b))), _loc_leaves(new_state.params),
                         _loc_leaves(state.params))
    assert max(jax.tree_util.tree_leaves(moved)) > 0
    # the regression layer starts at zero weights, so it must have left zero
    assert float(jnp.max(jnp.abs(new_state.params["st"]["regression"]["kernel"]))) > 0


def test_localization_lr_multiplier_scales_only_localization_updates():
    base = TrainConfig(lr=0.05, momentum=0.0, loc_lr_mult=1.0)
    slow = base.replace(loc_lr_mult=0.1)
    s1, images, labels = _setup(base)
    s2, _, _ = _setup(slow)
    key = jax.random.PRNGKey(3)
    n1, _ = train_step(s1, images, labels, key)
    n2, _ = train_step(s2, images, labels, key)
    d1 = jax.tree.map(lambda a, b: a - b, n1.params, s1.params)
    d2 = jax.tree.map(lambda a, b: a - b, n2.params, s2.params)
    mask = localization_mask(s1.params, is_loc)
    flat_mask = jax.tree_util.tree_leaves(mask)
    assert any(flat_mask) and not all(flat_mask)
    for m, a, b in zip(flat_mask, jax.tree_util.tree_leaves(d1), jax.tree_util.tree_leaves(d2), strict=True):
        np.testing.assert_allclose(np.asarray(b), np.asarray(a) * (0.1 if m else 1.0), rtol=1e-5, atol=1e-7)


def test_schedules():
    step = make_schedule(TrainConfig(lr=0.01, schedule="step", decay_steps=50, decay_factor=0.1))
    np.testing.assert_allclose([float(step(0)), float(step(49)), float(step(50)), float(step(120))],
                               [0.01, 0.01, 0.001, 0.0001], rtol=1e-6)
    cos = make_schedule(TrainConfig(lr=0.1, schedule="cosine", steps=100))
    assert float(cos(0)) == pytest.approx(0.1) and float(cos(100)) == pytest.approx(0.0, abs=1e-8)
    assert float(cos(50)) == pytest.approx(0.05, rel=1e-5)
    const = make_schedule(TrainConfig(lr=0.3, schedule="constant"))
    assert float(const(10_000)) == pytest.approx(0.3)


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_clipping_and_weight_decay_options_build_and_step(optimizer):
    config = TrainConfig(optimizer=optimizer, lr=1e-3, clip_norm=1e-3, weight_decay=1e-2)
    state, images, labels = _setup(config)
    new_state, metrics = jax.jit(train_step)(state, images, labels, jax.random.PRNGKey(0))
    assert bool(metrics["finite"])
    if optimizer == "sgd":   # clipped: ||update of first step|| <= lr * (clip + wd*||p||)
        delta = jax.tree.map(lambda a, b: a - b, new_state.params, state.params)
        pnorm = float(jnp.sqrt(sum(jnp.sum(p ** 2) for p in jax.tree_util.tree_leaves(state.params))))
        dnorm = float(jnp.sqrt(sum(jnp.sum(d ** 2) for d in jax.tree_util.tree_leaves(delta))))
        assert dnorm <= 1e-3 * (1e-3 + 1e-2 * pnorm) * 1.001


def test_identity_penalty_pulls_toward_identity():
    from stn_jax.linen import transform_penalty
    config = TrainConfig(lr=0.5, momentum=0.0, loc_lr_mult=1.0)
    state, images, labels = _setup(config)
    # move the regression bias away from identity, then take penalty-only-weighted steps
    params = jax.tree_util.tree_map(lambda x: x, state.params)
    params["st"]["regression"]["bias"] = params["st"]["regression"]["bias"] + 0.3
    state = state.replace(params=params)
    _, with_pen = train_step(state, images, labels, jax.random.PRNGKey(0), penalty_weight=10.0,
                             penalty_fn=transform_penalty)
    _, without = train_step(state, images, labels, jax.random.PRNGKey(0))
    assert float(with_pen["loss"]) > float(without["loss"]) + 0.5   # 10 * mean(0.3^2) = 0.9 added
    assert float(with_pen["ce"]) == pytest.approx(float(without["ce"]), rel=1e-5)


def test_identity_penalty_on_a_model_without_transformer_is_zero():
    """A sweep applies one recipe to every model: the penalty of a plain classifier is 0."""
    from stn_jax.linen import transform_penalty
    from stn_jax.models import create_model
    model = create_model("fcn", dataset="rts")
    images, labels = TinyDataset().train_batch(jax.random.PRNGKey(1), 8)
    images = jax.image.resize(images, (8, 42, 42, 1), "linear")
    params = model.init(jax.random.PRNGKey(0), images[:1], train=False)["params"]
    state = create_state(model, params, make_optimizer(TrainConfig(lr=0.01), params, is_localization=is_loc))
    _, with_pen = train_step(state, images, labels, jax.random.PRNGKey(0), penalty_weight=10.0,
                             penalty_fn=transform_penalty)
    _, without = train_step(state, images, labels, jax.random.PRNGKey(0))
    assert float(with_pen["loss"]) == pytest.approx(float(without["loss"]), rel=1e-6)


def test_nonfinite_step_leaves_state_unchanged():
    config = TrainConfig(lr=0.1)
    state, images, labels = _setup(config)
    bad = images.at[0, 0, 0, 0].set(jnp.nan)
    new_state, metrics = jax.jit(train_step)(state, bad, labels, jax.random.PRNGKey(0))
    assert not bool(metrics["finite"])
    assert int(new_state.step) == 0
    for a, b in zip(jax.tree_util.tree_leaves(new_state.params), jax.tree_util.tree_leaves(state.params), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_data_parallel_step_equals_single_device_step():
    assert jax.device_count() == 8, "tests/conftest.py fakes 8 CPU devices"
    config = TrainConfig(lr=0.1, momentum=0.9)
    state, images, labels = _setup(config, batch=32)
    key = jax.random.PRNGKey(5)
    single = jax.jit(train_step)
    mesh = parallel.make_mesh()
    dp = parallel.data_parallel(train_step, mesh, batch_argnums=(1, 2), num_args=4)
    s_single, s_dp = state, parallel.replicate(state, mesh)
    for _ in range(2):
        s_single, m_single = single(s_single, images, labels, key)
        xs, ys = parallel.put_global_batch((images, labels), mesh)
        assert len(xs.sharding.device_set) == 8
        s_dp, m_dp = dp(s_dp, xs, ys, key)
    assert float(m_dp["loss"]) == pytest.approx(float(m_single["loss"]), rel=1e-5)
    for a, b in zip(jax.tree_util.tree_leaves(s_dp.params), jax.tree_util.tree_leaves(s_single.params), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)


def test_uneven_batch_rejected_clearly():
    mesh = parallel.make_mesh()
    with pytest.raises(ValueError, match=r"batch_size=12 does not divide evenly over 8 devices.*multiple of 8"):
        parallel.check_batch(12, mesh)
    with pytest.raises(ValueError, match="divide evenly"):
        TrainConfig(batch_size=100).validate(device_count=8)


@pytest.mark.parametrize("changes, message", [
    ({"model": "2st-fcn", "dataset": "rts"}, "2st-fcn.*addition"),
    ({"dataset": "svhn"}, "dataset must be one of"),
    ({"transform": "rigid"}, "transform must be one of"),
    ({"lr": 0.0}, "lr must be > 0"),
    ({"steps": 0}, "steps must be a positive integer"),
    ({"momentum": 1.0}, "momentum must be < 1"),
    ({"padding_mode": "wrap"}, "padding_mode must be one of"),
])
def test_invalid_config_rejected(changes, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig(**changes).validate()


def test_config_files(tmp_path):
    (tmp_path / "a.json").write_text(json.dumps({"dataset": "p", "batch-size": 64}))
    (tmp_path / "b.toml").write_text('[train]\nmodel = "cnn"\nlr = 0.05\n')
    (tmp_path / "c.json").write_text(json.dumps({"bogus": 1}))
    assert TrainConfig.from_file(tmp_path / "a.json", steps=7) == TrainConfig(dataset="p", batch_size=64, steps=7)
    assert TrainConfig.from_file(tmp_path / "b.toml") == TrainConfig(model="cnn", lr=0.05)
    with pytest.raises(ValueError, match="unknown training option.*bogus"):
        TrainConfig.from_file(tmp_path / "c.json")
    (tmp_path / "a.yaml").write_text("dataset: p\n")
    with pytest.raises(ValueError, match=".json or .toml"):
        TrainConfig.from_file(tmp_path / "a.yaml")
    cfg = TrainConfig(seed=3)
    assert TrainConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg


def test_fcn_width_and_loc_downsample_reach_the_zoo():
    from stn_jax.models import count_params, create_model

    wide = create_model("fcn", dataset="rts", **TrainConfig(model="fcn", fcn_width=512).model_options())
    assert tuple(wide.hidden) == (512, 512)
    st = create_model("st-fcn", dataset="rts", **TrainConfig(model="st-fcn", fcn_width=64).model_options())
    assert tuple(st.classifier.hidden) == (64, 64)
    # 0 keeps the zoo's budget-matched widths; the CNN models ignore the option
    assert tuple(create_model("fcn", dataset="rts", **TrainConfig(model="fcn").model_options()).hidden) == (128, 128)
    assert TrainConfig(model="cnn", fcn_width=512).model_options() == TrainConfig(model="cnn").model_options()
    params = wide.init(jax.random.key(0), jnp.zeros((1, 42, 42, 1)))["params"]
    assert count_params(params) == 42 * 42 * 512 + 512 + 512 * 512 + 512 + 512 * 10 + 10
    loc = create_model("st-cnn", dataset="tc", **TrainConfig(loc_downsample=1).model_options())
    assert type(loc.transformer.localization).__name__ == "LocalizationCNN"  # not Downsampled
    assert "loc_downsample" not in TrainConfig(model="st-fcn", loc_downsample=1).model_options()
    with pytest.raises(ValueError, match="loc_downsample must be a non-negative integer"):
        TrainConfig(loc_downsample=-1).validate()
    with pytest.raises(ValueError, match="fcn_width must be a non-negative integer"):
        TrainConfig(fcn_width=-1).validate()
    old = {k: v for k, v in TrainConfig().to_dict().items() if k != "fcn_width"}
    assert TrainConfig.from_dict(old).fcn_width == 0


def test_padding_mode_reaches_the_zoo_transformer():
    from stn_jax.models import create_model

    border = create_model("st-cnn", dataset="rts", **TrainConfig(padding_mode="border").model_options())
    assert border.transformer.padding_mode == "border"
    assert create_model("st-cnn", dataset="rts", **TrainConfig().model_options()).transformer.padding_mode == "zeros"
    assert "padding_mode" not in TrainConfig(model="cnn", padding_mode="border").model_options()
    # st_pool: 0 keeps the dataset's pooling, 1 feeds the classifier the full-resolution output
    assert create_model("st-cnn", dataset="tc", **TrainConfig().model_options()).pool == 2
    assert create_model("st-cnn", dataset="tc", **TrainConfig(st_pool=1).model_options()).pool == 1
    with pytest.raises(ValueError, match="st_pool must be a non-negative integer"):
        TrainConfig(st_pool=-1).validate()
    # a config.json written before the option existed still loads (zeros, the paper's)
    old = {k: v for k, v in TrainConfig().to_dict().items() if k != "padding_mode"}
    assert TrainConfig.from_dict(old).padding_mode == "zeros"


def test_cluster_detection():
    assert not parallel.cluster_detected(environ={})
    assert parallel.cluster_detected(environ={"JAX_COORDINATOR_ADDRESS": "10.0.0.1:1234"})
    assert parallel.cluster_detected(environ={"SLURM_NTASKS": "4"})
    assert not parallel.cluster_detected(environ={"SLURM_NTASKS": "1"})
    assert not parallel.cluster_detected(environ={"TPU_WORKER_HOSTNAMES": "localhost"})


def test_architecture_reaches_the_zoo_cnns():
    from stn_jax.models import create_model

    assert create_model("cnn", dataset="rts", **TrainConfig(model="cnn").model_options()).padding == "VALID"
    padded = TrainConfig(model="cnn", architecture="padded").model_options()
    assert create_model("cnn", dataset="rts", **padded).padding == "SAME"
    st = create_model("st-cnn", dataset="rts", **TrainConfig(architecture="padded").model_options())
    assert st.classifier.padding == "SAME" and st.classifier.features[1] == 64
    assert "architecture" not in TrainConfig(model="st-fcn").model_options()
    with pytest.raises(ValueError, match="architecture must be one of"):
        TrainConfig(architecture="lenet").validate()
