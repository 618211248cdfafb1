"""The vector field network on the tiny config: shapes, cached conditioning equals the full call, inputs used."""

import dataclasses

import pytest
import torch

from smokeflow.config import load_config
from smokeflow.errors import ConfigError
from smokeflow.flow.predictor import FlowConfig, build_vector_field


@pytest.fixture(scope="module")
def tiny_model(repo_root):
    torch.manual_seed(0)
    config = FlowConfig.from_section(load_config(f"{repo_root}/configs/tiny.yaml")["flow"])
    model = build_vector_field(config)
    # The head starts at zero (the zero field); give it weights so outputs depend on the inputs.
    torch.nn.init.normal_(model.head.weight, std=0.1)
    return model.eval()


def _inputs(model, b=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    c, (h, w) = model.config.state_size, model.config.state_res
    z = lambda: torch.randn(b, c, h, w, generator=g)  # noqa: E731
    return z(), torch.rand(b, generator=g), z(), z(), torch.tensor([1, 2, 5])[:b]


def _reading_head_as(tiny_model, prediction: str, weights: bool = True):
    """A network like ``tiny_model`` whose head output is read as ``prediction`` (with its weights, or fresh)."""
    config = dataclasses.replace(tiny_model.config, prediction=prediction)
    model = build_vector_field(FlowConfig(sigma=1e-7, vector_field_regressor=config)).eval()
    if weights:
        model.load_state_dict(tiny_model.state_dict())
    return model


def test_output_shape_and_cached_condition_equal_full_call(tiny_model):
    x, t, ref, ctx, dist = _inputs(tiny_model)
    out = tiny_model(x, t, ref, ctx, dist)
    assert out.shape == x.shape and out.dtype == torch.float32
    cond = tiny_model.reference_tokens(ref) + tiny_model.context_tokens(ctx) + tiny_model.distance_tokens(dist)
    assert torch.allclose(tiny_model.velocity(x, t, cond), out, atol=1e-6)


@pytest.mark.parametrize("which", ["x", "t", "ref", "ctx", "dist"])
def test_every_input_changes_the_output(tiny_model, which):
    x, t, ref, ctx, dist = _inputs(tiny_model)
    base = tiny_model(x, t, ref, ctx, dist)
    changed = dict(x=x, t=t, ref=ref, ctx=ctx, dist=dist)
    changed[which] = {"x": x + 1, "t": 1 - t, "ref": ref + 1, "ctx": ctx + 1, "dist": dist + 3}[which]
    assert not torch.allclose(tiny_model(changed["x"], changed["t"], changed["ref"], changed["ctx"],
                                         changed["dist"]), base, atol=1e-5)


def test_samples_do_not_mix_and_gradients_reach_all_parameters(tiny_model):
    x, t, ref, ctx, dist = _inputs(tiny_model)
    full = tiny_model(x, t, ref, ctx, dist)
    single = tiny_model(x[1:2], t[1:2], ref[1:2], ctx[1:2], dist[1:2])
    assert torch.allclose(full[1:2], single, atol=1e-5)
    tiny_model.train()
    tiny_model.zero_grad()
    tiny_model(x, t, ref, ctx, dist).pow(2).mean().backward()
    tiny_model.eval()
    no_grad = [n for n, p in tiny_model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert no_grad == []


def test_bad_settings_raise_config_errors():
    with pytest.raises(ConfigError, match="unknown key"):
        FlowConfig.from_section({"vector_field_regressor": {"inner_dims": 3}})
    with pytest.raises(ConfigError, match="activation"):
        FlowConfig.from_section({"vector_field_regressor": {"activation": "relu6"}})
    with pytest.raises(ConfigError, match="divisible"):
        FlowConfig.from_section({"vector_field_regressor": {"inner_dim": 30, "num_heads": 4}})


def test_activation_choice_keeps_the_weights_and_changes_only_the_nonlinearity(tiny_model):
    """Both GELU forms have no parameters: the same state dict loads into either; outputs differ slightly."""
    exact_config = dataclasses.replace(tiny_model.config, activation="gelu")
    exact = build_vector_field(FlowConfig(sigma=1e-7, vector_field_regressor=exact_config)).eval()
    exact.load_state_dict(tiny_model.state_dict())
    x, t, ref, ctx, dist = _inputs(tiny_model)
    a, b = tiny_model(x, t, ref, ctx, dist), exact(x, t, ref, ctx, dist)
    assert not torch.equal(a, b) and torch.allclose(a, b, atol=0.05)
    mlp = exact.in_blocks[0].mlp[1]
    assert isinstance(mlp, torch.nn.GELU) and mlp.approximate == "none"


def test_warm_start_input_starts_as_the_river_network_then_uses_s(tiny_model, tmp_path):
    from safetensors.torch import save_file

    from smokeflow.errors import CheckpointError
    from smokeflow.flow.predictor import load_flow_weights
    from smokeflow.models.vector_field import VectorField

    river_file = str(tmp_path / "river.safetensors")
    save_file({k: v.contiguous() for k, v in tiny_model.state_dict().items()}, river_file)
    with_s = VectorField(dataclasses.replace(tiny_model.config, warm_start_input=True)).eval()
    with pytest.raises(CheckpointError, match="missing.*warm_start_mlp"):
        load_flow_weights(with_s, river_file)  # plain loading stays strict
    load_flow_weights(with_s, river_file, may_lack_new_inputs=True)  # fine-tuning from a RIVER network
    x, t, ref, ctx, dist = _inputs(tiny_model)
    s = torch.tensor([0.0, 0.1, 0.4])
    # Zero-output initialisation: the same function as the network it was loaded from, whatever s is.
    assert torch.equal(with_s(x, t, ref, ctx, dist, s), tiny_model(x, t, ref, ctx, dist))
    torch.nn.init.normal_(with_s.warm_start_mlp[-1].weight, std=0.1)
    out = with_s(x, t, ref, ctx, dist, s)
    assert not torch.allclose(out, with_s(x, t, ref, ctx, dist, s.flip(0)), atol=1e-5)
    # s is per sample, and a scalar s is broadcast over the batch.
    assert torch.allclose(out[1:2], with_s(x[1:2], t[1:2], ref[1:2], ctx[1:2], dist[1:2], 0.1), atol=1e-5)
    with_s.train()
    with_s(x, t, ref, ctx, dist, s).pow(2).mean().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in with_s.warm_start_mlp.parameters())


def test_data_prediction_turns_the_heads_clean_latent_into_the_paths_velocity(tiny_model):
    """prediction: data keeps the weights; the head's output is read as z_hat and v = (z_hat - x_t) / (1 - t),
    which is the velocity of x_t = (1 - t) eps + t z_hat, with 1 - t clamped near t = 1. The CPU fast path
    (packed weights) gives the same velocities."""
    from smokeflow.flow.packed_velocity import PackedVelocity, packing_available
    from smokeflow.models.vector_field import DATA_PREDICTION_MIN_GAP

    data_model = _reading_head_as(tiny_model, "data")
    x, t, ref, ctx, dist = _inputs(tiny_model)
    t = torch.tensor([0.0, 0.5, 0.99])
    with torch.no_grad():
        z_hat = tiny_model(x, t, ref, ctx, dist)  # the same head output, read as a velocity there
        v = data_model(x, t, ref, ctx, dist)
    gap = torch.tensor([1.0, 0.5, DATA_PREDICTION_MIN_GAP]).view(3, 1, 1, 1)
    assert torch.allclose(v, (z_hat - x) / gap, atol=1e-5)
    # At t = 0.5: one Euler step of length 1 - t from x_t lands on the predicted clean latent.
    assert torch.allclose(x[1] + 0.5 * v[1], z_hat[1], atol=1e-5)
    if packing_available():
        condition = data_model.condition(ref, ctx, dist)
        with torch.no_grad():
            packed = PackedVelocity(data_model)(x, t, condition)
        assert torch.allclose(packed, v, atol=1e-4)
    with pytest.raises(ConfigError, match="prediction"):
        FlowConfig.from_section({"vector_field_regressor": {"prediction": "noise"}})


def test_residual_prediction_adds_the_head_output_to_the_reference(tiny_model):
    """prediction: residual reads the head's output as the change from z_ref: z_hat = z_ref + out. The packed
    CPU path agrees, a call without the reference is refused, and with the zero-initialised head a fresh
    network's rollout is the last observed frame repeated (copy-last), from any warm start."""
    from smokeflow.flow.packed_velocity import PackedVelocity, packing_available
    from smokeflow.flow.path import FlowPath
    from smokeflow.flow.sampler import rollout

    model = _reading_head_as(tiny_model, "residual")
    x, t, ref, ctx, dist = _inputs(tiny_model)
    t = torch.tensor([0.0, 0.5, 0.8])
    with torch.no_grad():
        out = tiny_model(x, t, ref, ctx, dist)  # the same head output, read as a velocity there
        v = model(x, t, ref, ctx, dist)
    gap = (1.0 - t).view(3, 1, 1, 1)
    assert torch.allclose(v, (ref + out - x) / gap, atol=1e-5)
    condition = model.condition(ref, ctx, dist)
    with pytest.raises(ValueError, match="reference latent"):
        model.velocity(x, t, condition)
    if packing_available():
        with torch.no_grad():
            packed = PackedVelocity(model)(x, t, condition, anchor=ref)
        assert torch.allclose(packed, v, atol=1e-4)

    fresh = _reading_head_as(tiny_model, "residual", weights=False)
    z_obs = ref[:2]
    for s in (0.0, 0.3):
        with torch.no_grad():
            latents = rollout(fresh, FlowPath(1e-7), z_obs, 3, steps=4, warm_start=s, num_samples=2).latents
        assert latents.shape == (2, 3, *ref.shape[1:])
        # Euler from x_s with v = (z_ref - x) / (1 - t) lands exactly on z_ref after the last step.
        torch.testing.assert_close(latents, z_obs[-1].expand_as(latents), atol=1e-5, rtol=0)
