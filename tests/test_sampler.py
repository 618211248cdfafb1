"""Autoregressive rollouts with the real tiny network: shapes, NFE, determinism, warm start, callbacks."""

import pytest
import torch

from smokeflow.config import load_config
from smokeflow.flow.predictor import FlowConfig, FlowPredictor


def _obs(predictor, t_obs):
    c, (h, w) = predictor.model.config.state_size, predictor.model.config.state_res
    return torch.randn(t_obs, c, h, w, generator=torch.Generator().manual_seed(3))


@pytest.mark.parametrize("solver,steps,evals", [("euler", 3, 1), ("heun", 2, 2), ("rk4", 1, 4)])
@pytest.mark.parametrize("t_obs", [1, 3])
def test_rollout_shapes_and_exact_nfe(predictor, solver, steps, evals, t_obs):
    out = predictor.predict_latents(_obs(predictor, t_obs), num_frames=4, steps=steps, solver=solver,
                                    num_samples=3, seed=0)
    assert out.latents.shape == (3, 4, *_obs(predictor, 1).shape[1:])
    assert out.nfe == 4 * steps * evals
    assert torch.isfinite(out.latents).all()


def test_dopri5_rollout_counts_its_evaluations(predictor):
    reports = []
    out = predictor.predict_latents(_obs(predictor, 2), num_frames=2, solver="dopri5",
                                    callback=reports.append)
    assert out.nfe == sum(1 for r in reports if not r.frame_done) and out.nfe >= 12


@pytest.mark.parametrize("policy", ["per_call", "per_frame"])
def test_rollout_is_deterministic_for_a_seed(predictor, policy):
    z = _obs(predictor, 2)
    a = predictor.predict_latents(z, 3, steps=4, num_samples=2, seed=7, context_policy=policy).latents
    b = predictor.predict_latents(z, 3, steps=4, num_samples=2, seed=7, context_policy=policy).latents
    c = predictor.predict_latents(z, 3, steps=4, num_samples=2, seed=8, context_policy=policy).latents
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)
    assert not torch.allclose(a[0], a[1])  # the K samples get different noise


def test_context_policies_differ_once_there_are_several_candidates(predictor):
    z = _obs(predictor, 4)
    per_call = predictor.predict_latents(z, 2, steps=6, seed=1, context_policy="per_call").latents
    per_frame = predictor.predict_latents(z, 2, steps=6, seed=1, context_policy="per_frame").latents
    assert not torch.allclose(per_call, per_frame)


def test_batched_samples_equal_single_runs_with_one_observation(predictor):
    """With one observation the context is the reference (distance 1) and nothing is random but the noise:
    per_frame and per_call then agree."""
    z = _obs(predictor, 1)
    a = predictor.predict_latents(z, 1, steps=3, seed=4, context_policy="per_call").latents
    b = predictor.predict_latents(z, 1, steps=3, seed=4, context_policy="per_frame").latents
    assert torch.allclose(a, b, atol=1e-6)


def test_zero_field_keeps_the_warm_start_state(repo_root):
    """A fresh network is the zero field (zero-initialised head): the rollout returns its start state, so
    each frame must be (1-(1-sigma)s) eps + s * previous frame, with eps drawn from the seed."""
    config = FlowConfig.from_section(load_config(f"{repo_root}/configs/tiny.yaml")["flow"])
    pred = FlowPredictor.from_config(config)
    z = torch.randn(1, config.vector_field_regressor.state_size, 8, 8)
    s = 0.4
    out = pred.predict_latents(z, 2, steps=3, warm_start=s, seed=5).latents[0]
    g = torch.Generator().manual_seed(5)
    eps1 = torch.randn(1, *z.shape[1:], generator=g)[0]
    first = (1 - (1 - config.sigma) * s) * eps1 + s * z[0]
    assert torch.allclose(out[0], first, atol=1e-5)
    cold = pred.predict_latents(z, 1, steps=3, warm_start=0.0, seed=5).latents[0, 0]
    assert torch.allclose(cold, eps1, atol=1e-5)


def test_progress_callback_reports_every_step_and_frame(predictor):
    reports = []
    predictor.predict_latents(_obs(predictor, 1), 3, steps=4, solver="midpoint", callback=reports.append)
    steps = [(r.frame, r.step) for r in reports if not r.frame_done]
    assert steps == [(f, s) for f in range(3) for s in range(1, 5)]
    assert [r.frame for r in reports if r.frame_done] == [0, 1, 2]
    assert all(r.num_frames == 3 and r.num_steps == 4 for r in reports)


def test_bad_arguments_are_rejected(predictor):
    z = _obs(predictor, 1)
    for kwargs, message in [(dict(warm_start=1.0), "warm_start"), (dict(solver="rk45"), "solver"),
                            (dict(context_policy="once"), "context_policy"), (dict(num_samples=0), "num_samples")]:
        with pytest.raises(ValueError, match=message):
            predictor.predict_latents(z, 2, **kwargs)
    with pytest.raises(ValueError, match="z_obs"):
        predictor.predict_latents(torch.zeros(2, 3, 8, 8), 2)


def test_compiled_velocity_gives_the_eager_rollout(predictor):
    """torch.compile of the per-step call (real inductor compile of the tiny net) changes speed, not results."""
    compiled = FlowPredictor(predictor.model, predictor.path, compile=True)
    z = _obs(predictor, 2)
    eager = predictor.predict_latents(z, 2, steps=3, num_samples=2, seed=5)
    fast = compiled.predict_latents(z, 2, steps=3, num_samples=2, seed=5)
    assert compiled.velocity_fn.failure is None
    assert fast.nfe == eager.nfe
    torch.testing.assert_close(fast.latents, eager.latents, rtol=1e-4, atol=1e-4)


def test_failed_compilation_falls_back_to_eager_with_a_warning(predictor, monkeypatch):
    def broken_compile(fn, **kwargs):
        def call(*args, **kwargs):
            raise RuntimeError("no C++ compiler found\nlong traceback text")
        return call

    monkeypatch.setattr(torch, "compile", broken_compile)
    compiled = FlowPredictor(predictor.model, predictor.path, compile=True)
    z = _obs(predictor, 1)
    with pytest.warns(RuntimeWarning, match="no C.. compiler found.*running it eagerly"):
        out = compiled.predict_latents(z, 2, steps=2, seed=1)
    assert compiled.velocity_fn.failure == "RuntimeError: no C++ compiler found"
    torch.testing.assert_close(out.latents, predictor.predict_latents(z, 2, steps=2, seed=1).latents)


def test_packed_cpu_path_gives_the_plain_networks_velocities_and_rollouts(predictor):
    """The default CPU path (oneDNN pre-packed weights, fused GELU/SiLU) computes the same network."""
    from smokeflow.flow.packed_velocity import PackedVelocity, packing_available

    if not packing_available():
        pytest.skip("this PyTorch has no oneDNN")
    model = predictor.model
    packed = PackedVelocity(model)
    c, (h, w) = model.config.state_size, model.config.state_res
    for batch in (1, 3):
        z = torch.randn(batch, c, h, w)
        t = torch.rand(batch)
        with torch.inference_mode():
            condition = model.condition(z, torch.randn_like(z), torch.full((batch,), 2))
            torch.testing.assert_close(packed(z, t, condition), model.velocity(z, t, condition),
                                       rtol=1e-4, atol=1e-5)
            # The time token is cached by t: the same t again is a cache hit with the same velocity.
            cached = len(packed._time_tokens)
            torch.testing.assert_close(packed(z, t, condition), model.velocity(z, t, condition),
                                       rtol=1e-4, atol=1e-5)
            assert len(packed._time_tokens) == cached
    assert FlowPredictor(model, predictor.path).packed  # the default on CPU
    # The packed weights follow changes to the model's weights (checked before each rollout).
    z = _obs(predictor, 1)
    before = predictor.predict_latents(z, 1, steps=1, seed=3).latents
    with torch.no_grad():
        predictor.model.head.bias.add_(1.0)
    after = predictor.predict_latents(z, 1, steps=1, seed=3).latents
    with torch.no_grad():
        predictor.model.head.bias.sub_(1.0)
    torch.testing.assert_close(after - before, torch.full_like(before, 1.0), rtol=1e-4, atol=1e-4)  # one Euler step of 1
    plain = FlowPredictor(model, predictor.path, pack=False)
    fast = FlowPredictor(model, predictor.path, pack=True)
    z = _obs(predictor, 2)
    torch.testing.assert_close(fast.predict_latents(z, 3, steps=3, num_samples=2, seed=4).latents,
                               plain.predict_latents(z, 3, steps=3, num_samples=2, seed=4).latents,
                               rtol=1e-4, atol=1e-4)


def test_project_frame_maps_each_generated_frame_before_it_is_fed_back(predictor):
    """The projection's output is both what is returned and what conditions the next frame."""
    z = _obs(predictor, 1)
    seen = []

    def halve(y):
        seen.append(y.clone())
        return 0.5 * y

    projected = predictor.predict_latents(z, 3, steps=2, warm_start=0.1, num_samples=2, seed=5,
                                          project_frame=halve).latents
    plain = predictor.predict_latents(z, 3, steps=2, warm_start=0.1, num_samples=2, seed=5).latents
    assert len(seen) == 3
    for f in range(3):
        torch.testing.assert_close(projected[:, f], 0.5 * seen[f])
    torch.testing.assert_close(seen[0], plain[:, 0])  # same draws: the first frame is the same before projection
    assert not torch.allclose(seen[1], plain[:, 1])  # later frames are conditioned on the projected ones


def test_a_warm_start_input_network_is_told_the_samplers_warm_start(predictor):
    """Every network call of a rollout gets the conditioning of its frame for the warm start s in use."""
    import dataclasses

    from smokeflow.flow.sampler import rollout
    from smokeflow.models.vector_field import VectorField

    model = VectorField(dataclasses.replace(predictor.model.config, warm_start_input=True)).eval()
    model.load_state_dict(predictor.model.state_dict(), strict=False)
    torch.nn.init.normal_(model.warm_start_mlp[-1].weight, std=0.1)
    z = _obs(predictor, 1)
    seen = []

    def spy(y, t, condition, anchor=None):
        seen.append(condition.clone())
        return model.velocity(y, t, condition, anchor=anchor)

    for s in (0.2, 0.5):
        seen.clear()
        out = rollout(model, predictor.path, z, 1, steps=2, warm_start=s, num_samples=2, seed=1, velocity_fn=spy)
        expected = model.condition(z.expand(2, -1, -1, -1), z.expand(2, -1, -1, -1), torch.tensor([1, 1]), s)
        assert len(seen) == 2 and all(torch.allclose(c, expected, atol=1e-6) for c in seen)
        if s == 0.2:
            first = out.latents
    assert not torch.allclose(first, out.latents, atol=1e-4)


def test_rollout_warm_starts_from_the_source_once_per_frame_and_only_when_s_is_positive(predictor, repo_root):
    c, (h, w) = predictor.model.config.state_size, predictor.model.config.state_res
    z = torch.randn(1, c, h, w, generator=torch.Generator().manual_seed(3))
    calls = []

    def source(reference):
        calls.append(reference.clone())
        return reference

    same = predictor.predict_latents(z, 3, steps=2, warm_start=0.2, num_samples=2, seed=4, warm_start_source=source)
    plain = predictor.predict_latents(z, 3, steps=2, warm_start=0.2, num_samples=2, seed=4)
    torch.testing.assert_close(same.latents, plain.latents)  # an identity source is RIVER's warm start
    assert len(calls) == 3 and calls[0].shape == (2, c, h, w)
    torch.testing.assert_close(calls[1], same.latents[:, 0])  # the reference of frame 2 is frame 1
    predictor.predict_latents(z, 2, steps=2, warm_start=0.0, warm_start_source=source)
    assert len(calls) == 3  # s = 0 starts from pure noise: nothing to advect

    # A fresh network is the zero field: the first frame is exactly the warm start from the source's latents.
    config = FlowConfig.from_section(load_config(f"{repo_root}/configs/tiny.yaml")["flow"])
    zero_field = FlowPredictor.from_config(config)
    s = 0.4
    shifted = zero_field.predict_latents(z, 1, steps=3, warm_start=s, seed=5,
                                         warm_start_source=lambda ref: ref + 1.0).latents[0, 0]
    eps = torch.randn(1, c, h, w, generator=torch.Generator().manual_seed(5))[0]
    torch.testing.assert_close(shifted, (1 - (1 - config.sigma) * s) * eps + s * (z[0] + 1.0), atol=1e-5, rtol=0)
