"""One module per CLI command: ``HELP``, ``add_arguments(parser)``, ``run(args) -> int``.

These are thin adapters: they parse nothing themselves beyond argparse and call library functions.
"""


def warm_start_motion_argument(text: str):
    """argparse type of ``--warm-start-motion`` (evaluate, predict): see
    :func:`smokeflow.data.smoke_velocity.parse_warm_start_motion`."""
    import argparse

    from smokeflow.data.smoke_velocity import parse_warm_start_motion

    try:
        return parse_warm_start_motion(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def add_warm_start_motion_argument(parser) -> None:
    """``--warm-start-motion`` of evaluate and predict."""
    parser.add_argument("--warm-start-motion", type=warm_start_motion_argument, default="auto",
                        metavar="auto|prior|off|DRIFT,RISE",
                        help="with --warm-start > 0, warm-start each frame from the previous one moved by the "
                             "smoke's velocity: auto = measured on the observed frames (2 or more), else guessed "
                             "from the last one by the checkpoint's motion network, else the checkpoint's motion "
                             "prior; prior = the motion prior (one velocity for the whole frame); off = RIVER's "
                             "warm start; DRIFT,RISE = this velocity in px per frame (default: %(default)s)")


def detail_guidance_weight(text: str) -> float:
    """argparse type of ``--detail-guidance``: a finite weight >= 0."""
    import argparse
    import math

    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not (math.isfinite(value) and value >= 0):
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, got {text}")
    return value


def number_in_unit_interval(what: str = ""):
    """argparse type of a number in [0, 1]; ``what`` names it in the error ("must be {what}in [0, 1], got X")."""
    import argparse

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        if not 0.0 <= value <= 1.0:
            raise argparse.ArgumentTypeError(f"must be {what}in [0, 1], got {text}")
        return value

    return parse


_unit_interval = number_in_unit_interval()


def detail_amount(text: str) -> float | None:
    """argparse type of ``--detail``: a number in [0, 1], or ``auto`` (None: see SmokeFlow.resolve_detail)."""
    from smokeflow.flow.defaults import is_auto_detail

    return None if is_auto_detail(text) else _unit_interval(text)


def add_detail_argument(parser) -> None:
    """``--detail`` of evaluate and predict (see :mod:`smokeflow.flow.detail_blend`)."""
    parser.add_argument("--detail", type=detail_amount, default=None, metavar="A|auto",
                        help="blend this share (0-1) of the checkpoint's detail-distilled network "
                             "(flow_detail.safetensors) into its flow network: sharper rollouts at no extra cost, "
                             "at some cost in PSNR; 0 = the network as trained. Default auto: the share that "
                             "keeps rollouts as sharp as the default warm start 0.2 does with none, i.e. 0 at "
                             "--warm-start 0.2 and above, 0.25 at 0.1, up to 0.5 (0 when the checkpoint has no "
                             "detail weights)")


def add_detail_guidance_argument(parser) -> None:
    """``--detail-guidance`` of evaluate and predict (see :mod:`smokeflow.flow.detail_guidance`)."""
    parser.add_argument("--detail-guidance", type=detail_guidance_weight, default=0.0, metavar="W",
                        help="steer each frame away from what the previous frame blurred by 1 px would make of "
                             "it: keeps rollouts sharp (w = 0.25 holds frame 1's sharpness over 9 frames) at "
                             "twice the network evaluations and a slightly worse feature distance; 0 = off "
                             "(default: %(default)s)")


def add_network_speed_arguments(parser) -> None:
    """``--compile`` and ``--int8`` of evaluate and predict: how the flow network's per-step call runs on the CPU."""
    group = parser.add_mutually_exclusive_group()  # the int8 network is not compiled
    group.add_argument("--compile", action="store_true",
                       help="torch.compile the flow network (faster per step; the first call compiles for "
                            "up to ~40 s)")
    group.add_argument("--int8", action="store_true",
                       help="run most of the flow network's linear layers with int8 weights and activations on "
                            "the CPU: 1.1-1.3x faster rollouts in our runs, metrics within noise of float32 but "
                            "not the same samples (model card, \"Int8 network\")")


def check_network_speed_arguments(args) -> None:
    """ConfigError for ``--int8`` off the CPU (the int8 network runs on the CPU's quantised engine only)."""
    from smokeflow.errors import ConfigError

    if args.int8 and str(args.device).split(":")[0] != "cpu":
        raise ConfigError(f"--int8 runs the network on the CPU only, not on --device {args.device}: drop --int8 "
                          "(CUDA runs bf16) or use --device cpu")
