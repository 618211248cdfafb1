"""Sampling defaults shared by ``SmokeFlow.predict`` and the ``predict`` / ``evaluate`` commands.

Kept free of torch so that ``smokeflow --help`` stays fast.
"""

# Warm start s of a prediction when the caller does not choose one. s = 0 (pure noise, the flow module's own
# default) blurs: on 40 val videos (K = 4, 9 frames, Euler N = 10) its sharpness at frame 9 is 14.1 and the
# smoke rises at 0.23 of the truth's rate. With the advected warm start, s = 0.2 keeps rollouts sharper and
# moving like the truth (1 observed frame: sharpness 20.2, rise 1.00 of the truth, mass 117 against 115,
# feature distance 3.02 against 3.27 at s = 0.1); from 2 observed frames it beats s = 0.1 on PSNR, best of 4,
# SSIM, sharpness, rise and feature distance (model card, session 15). The reporting protocol passes
# s = 0.1 explicitly.
DEFAULT_WARM_START = 0.2

# Detail blend (smokeflow.flow.detail_blend) when the caller leaves it to us ("auto"). The less of the previous
# frame the warm start carries, the more each predicted frame softens, and it compounds over a rollout; the
# detail-distilled copy of the network makes up for it. Measured on 40 val videos (K = 4, 9 frames, Euler
# N = 10, 1 observed frame; model card, session 25), sharpness at frames 1 / 5 / 9, truth 30.1 / 29.3 / 30.3:
#   s = 0.2, detail 0:    26.4 / 25.9 / 26.1 (holds; detail 0.25 would climb to 28.4 and add 3 % of mass)
#   s = 0.15, detail 0.125: 26.4 / 25.4 / 25.4 (holds)
#   s = 0.1, detail 0:    25.5 / 22.6 / 21.7 (softens)   detail 0.25: 26.2 / 25.1 / 25.2 (holds, -0.24 dB)
#   s = 0,   detail 0:    23.4 / 16.7 / 15.6 (blurs, mass -13 %)   detail 0.5: 25.6 / 23.1 / 23.1 (FD 5.2 -> 3.6)
# So the amount grows linearly as s falls below the default, 0.25 per 0.1 of warm start, up to a cap: at s = 0
# detail 0.75 was worse than 0.5 on every score but sharpness (SSIM 0.698, mass +19 %, FD 7.7).
AUTO_DETAIL_PER_WARM_START = 2.5
AUTO_DETAIL_MAX = 0.5


def auto_detail(warm_start: float) -> float:
    """The detail amount in [0, AUTO_DETAIL_MAX] that keeps rollouts at warm start ``warm_start`` (in [0, 1]) about
    as sharp as the default warm start keeps them with none: 0 at s >= DEFAULT_WARM_START, 0.25 at s = 0.1."""
    deficit = max(0.0, DEFAULT_WARM_START - float(warm_start))
    return round(min(AUTO_DETAIL_MAX, AUTO_DETAIL_PER_WARM_START * deficit), 4)


def is_auto_detail(text: str) -> bool:
    """Whether a detail amount written on the command line or in a sweep asks for the automatic amount
    (``auto``, any case; callers turn it into None, which SmokeFlow.resolve_detail resolves)."""
    return text.strip().lower() == "auto"
