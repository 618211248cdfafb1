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
