"""smokeflow: predict how smoke moves.

A frozen VQVAE compresses 64x64 RGB smoke frames to 8x8x256 latents; a RIVER-style flow-matching model
predicts each next latent from the previous frame, a random earlier context frame and their index distance;
ODE solvers with warm-start sampling roll the video forward.

The one object most users need is :class:`smokeflow.SmokeFlow` (imported lazily so that
``import smokeflow`` and ``smokeflow --help`` stay fast).
"""

__version__ = "0.1.0"

__all__ = ["SmokeFlow", "__version__"]


def __getattr__(name):
    if name == "SmokeFlow":
        from smokeflow.pipeline import SmokeFlow

        return SmokeFlow
    raise AttributeError(f"module 'smokeflow' has no attribute {name!r}")
