"""Detail guidance (smokeflow.flow.detail_guidance): the guided velocity, its cost, and the blur it uses."""

import pytest
import torch

from smokeflow.flow.detail_guidance import DetailGuidance, blurred_reference, gaussian_blur, smoke_tokens
from smokeflow.flow.sampler import rollout

from test_sampler import _obs  # the sampler tests' latents (the tiny network: conftest's predictor)


def test_zero_weight_or_an_identity_soften_is_plain_sampling(predictor):
    z = _obs(predictor, 2)
    plain = predictor.predict_latents(z, 3, steps=2, warm_start=0.2, num_samples=2, seed=4)
    off = predictor.predict_latents(z, 3, steps=2, warm_start=0.2, num_samples=2, seed=4,
                                    detail_guidance=DetailGuidance(0.0, lambda ref: ref + 5.0))
    assert torch.equal(off.latents, plain.latents) and off.nfe == plain.nfe == 3 * 2
    # With nothing softened both branches agree, so v + w (v - v) = v; but every step now costs two calls.
    same = predictor.predict_latents(z, 3, steps=2, warm_start=0.2, num_samples=2, seed=4,
                                     detail_guidance=DetailGuidance(0.7, lambda ref: ref))
    torch.testing.assert_close(same.latents, plain.latents, atol=1e-5, rtol=0)
    assert same.nfe == 2 * plain.nfe


def test_guided_step_is_v_plus_w_times_v_minus_the_softened_references_v(predictor):
    """One frame, one Euler step from pure noise: the result is the guided velocity applied to the noise."""
    model, path = predictor.model, predictor.path
    z = _obs(predictor, 1)
    soften = lambda ref: 0.5 * ref  # noqa: E731 - any map of the reference
    calls = []

    def spy(y, t, condition, anchor=None):
        calls.append(y.shape[0])
        return model.velocity(y, t, condition, anchor=anchor)

    out = rollout(model, path, z, 1, steps=1, num_samples=2, seed=9, velocity_fn=spy,
                  detail_guidance=DetailGuidance(0.3, soften))
    assert calls == [4]  # both branches of the K = 2 samples in one batch
    eps = torch.randn(2, *z.shape[1:], generator=torch.Generator().manual_seed(9))
    ref = z.expand(2, -1, -1, -1)
    with torch.no_grad():
        t = torch.zeros(2)
        v = model.velocity(eps, t, model.condition(ref, ref, torch.tensor([1, 1])), anchor=ref)
        soft_condition = model.condition(ref, ref, torch.tensor([1, 1])) \
            + model.reference_tokens(soften(ref)) - model.reference_tokens(ref)
        v_soft = model.velocity(eps, t, soft_condition, anchor=ref)
    torch.testing.assert_close(out.latents[:, 0], eps + v + 0.3 * (v - v_soft), atol=1e-5, rtol=0)


def test_token_weights_limit_the_added_detail_to_where_they_are_one(predictor):
    """One Euler step from pure noise with m = 1 on the left half of the tokens: guided there, plain elsewhere."""
    model, path = predictor.model, predictor.path
    z = _obs(predictor, 1)
    soften = lambda ref: 0.5 * ref  # noqa: E731
    h, w = z.shape[-2:]
    left = torch.zeros(1, 1, h, w)
    left[..., : w // 2] = 1.0
    seen = []

    def where(ref):
        seen.append(ref.shape)
        return left.expand(ref.shape[0], -1, -1, -1)

    masked = rollout(model, path, z, 1, steps=1, num_samples=2, seed=9,
                     detail_guidance=DetailGuidance(0.6, soften, where=where))
    everywhere = rollout(model, path, z, 1, steps=1, num_samples=2, seed=9, detail_guidance=DetailGuidance(0.6, soften))
    plain = rollout(model, path, z, 1, steps=1, num_samples=2, seed=9)
    assert seen == [(2, *z.shape[1:])]  # once per frame, on the K references
    torch.testing.assert_close(masked.latents[..., : w // 2], everywhere.latents[..., : w // 2], atol=1e-5, rtol=0)
    torch.testing.assert_close(masked.latents[..., w // 2:], plain.latents[..., w // 2:], atol=1e-5, rtol=0)
    assert not torch.allclose(everywhere.latents, plain.latents)


def test_smoke_tokens_mark_the_patches_with_smoke_and_their_neighbours():
    images = torch.full((1, 3, 32, 32), -1.0)  # black: no smoke
    images[0, :, 9, 10] = 0.5  # one smoke pixel in token (1, 1) of the 4x4 token grid (8x8 px patches)
    decode = lambda z: images.expand(z.shape[0], -1, -1, -1)  # noqa: E731
    z = torch.zeros(2, 5, 4, 4)
    exact = smoke_tokens(decode, dilation=0)(z)
    expected = torch.zeros(2, 1, 4, 4)
    expected[..., 1, 1] = 1.0
    assert torch.equal(exact, expected)
    grown = smoke_tokens(decode, dilation=1)(z)
    expected[..., 0:3, 0:3] = 1.0
    assert torch.equal(grown, expected)
    dim = images.clone()
    dim[0, :, 9, 10] = 10 / 255 * 2 - 1  # below the smoke threshold
    assert smoke_tokens(lambda z: dim, dilation=1)(z[:1]).sum() == 0


def test_guided_rollouts_are_deterministic_and_soften_runs_once_per_frame(predictor):
    z = _obs(predictor, 1)
    seen = []

    def soften(ref):
        seen.append(ref.clone())
        return 0.8 * ref

    guidance = DetailGuidance(0.25, soften)
    a = predictor.predict_latents(z, 3, steps=3, warm_start=0.2, num_samples=2, seed=1, detail_guidance=guidance)
    assert len(seen) == 3 and seen[0].shape == (2, *z.shape[1:])
    torch.testing.assert_close(seen[1], a.latents[:, 0])  # the reference of frame 2 is frame 1
    b = predictor.predict_latents(z, 3, steps=3, warm_start=0.2, num_samples=2, seed=1, detail_guidance=guidance)
    plain = predictor.predict_latents(z, 3, steps=3, warm_start=0.2, num_samples=2, seed=1)
    assert torch.equal(a.latents, b.latents) and not torch.allclose(a.latents, plain.latents)
    assert a.nfe == 2 * 3 * 3


def test_negative_or_nan_weights_are_refused():
    for weight in (-0.1, float("nan")):
        with pytest.raises(ValueError, match="weight"):
            DetailGuidance(weight, lambda ref: ref)


def test_gaussian_blur_keeps_constants_and_mass_and_spreads_a_point():
    flat = torch.full((1, 3, 16, 16), 0.3)
    torch.testing.assert_close(gaussian_blur(flat, 1.0), flat)
    point = torch.zeros(1, 3, 17, 17)
    point[..., 8, 8] = 1.0
    blurred = gaussian_blur(point, 1.0)
    torch.testing.assert_close(blurred.sum(dim=(-1, -2)), torch.ones(1, 3))  # far from the edges: mass kept
    assert blurred[0, 0, 8, 8] < 0.2 and blurred[0, 0, 8, 9] > 0.05
    torch.testing.assert_close(blurred[0, 0], blurred[0, 0].T)  # isotropic
    assert torch.equal(gaussian_blur(point, 0.0), point)


def test_blurred_reference_decodes_blurs_and_encodes():
    decoded = []

    def decode(z):
        images = z.repeat(1, 3, 1, 1)
        decoded.append(images)
        return images

    def encode(images):
        return images[:, :1] * 2.0

    z = torch.zeros(2, 1, 9, 9)
    z[:, 0, 4, 4] = 1.0
    out = blurred_reference(decode, encode, sigma=1.0)(z)
    assert len(decoded) == 1 and out.shape == z.shape
    torch.testing.assert_close(out, 2.0 * gaussian_blur(z.repeat(1, 3, 1, 1), 1.0)[:, :1])
