"""The TensorRT optimisation profile of the ``image`` input: the range of batch, height and
width an engine accepts and the shape it is tuned for (the other inputs' shapes follow from
it). ``bokeh-export engine`` bakes one into an engine; ONNX Runtime's TensorRT provider gets
the same one, so both paths accept the same photos and neither rebuilds for each new size.
"""

from __future__ import annotations

from dbsi.runtime.contract import (
    APERTURE_NAME,
    INPUT_NAME,
    TEMPORAL_MIX_NAME,
    TEMPORAL_STATE_NAME,
    GraphMetadata,
)

# Defaults cover single EBB!-sized photos best and batches of up to 4 HD frames (1920x1080 in
# either orientation); the minimum comes from the ONNX's metadata.
DEFAULT_OPT_SHAPE = (1, 1024, 1536, 3)
DEFAULT_MAX_SHAPE = (4, 2048, 2048, 3)

Profile = dict[str, list[int]]


def parse_shape(text: str) -> tuple[int, int, int, int]:
    """``"NxHxWx3"`` -> (N, H, W, 3); ValueError on anything else."""
    try:
        dims = tuple(int(part) for part in text.lower().split("x"))
    except ValueError:
        dims = ()
    if len(dims) != 4 or dims[3] != 3 or min(dims) < 1:
        raise ValueError(
            f"shape {text!r} is not NxHxWx3 with positive N, H, W (e.g. 1x1024x1536x3)"
        )
    return dims  # type: ignore[return-value]


def build_profile(
    metadata: GraphMetadata,
    min_shape: tuple[int, ...] | None = None,
    opt_shape: tuple[int, ...] | None = None,
    max_shape: tuple[int, ...] | None = None,
) -> Profile:
    """The optimisation profile for ``image``: the given shapes, defaults for the rest, checked
    against the ONNX's input limits; ValueError says what is wrong.

    Defaults give way to given shapes per dimension: a default min or opt never exceeds a
    given max (so ``--max-shape 2x512x512x3`` alone works), a default max never falls below a
    given min or opt."""
    smallest, largest = metadata.min_input_side, metadata.max_input_side
    given = {"min": min_shape, "opt": opt_shape, "max": max_shape}
    caps = [s for s in (opt_shape, max_shape) if s]
    floors = [s for s in (min_shape, opt_shape) if s]
    low = list(
        min_shape
        or [min([d, *(s[i] for s in caps)]) for i, d in enumerate((1, smallest, smallest, 3))]
    )
    high = list(
        max_shape or [max([d, *(s[i] for s in floors)]) for i, d in enumerate(DEFAULT_MAX_SHAPE)]
    )
    mid = list(opt_shape or [min(max(d, low[i]), high[i]) for i, d in enumerate(DEFAULT_OPT_SHAPE)])
    profile = {"min": low, "opt": mid, "max": high}
    for name, shape in profile.items():
        if not smallest <= min(shape[1:3]) or max(shape[1:3]) > largest:
            origin = "" if given[name] else " (default, from the shapes given)"
            raise ValueError(
                f"{name} shape {shape}{origin}: height and width must lie in "
                f"[{smallest}, {largest}]"
            )
    if not all(a <= b <= c for a, b, c in zip(low, mid, high)):
        raise ValueError(f"profile needs min <= opt <= max in every dimension, got {profile}")
    return profile


def input_shapes(profile: Profile, metadata: GraphMetadata) -> dict[str, dict[str, list[int]]]:
    """The profile's min, opt and max shape of each of the graph's inputs: the image's own,
    the aperture's [N] with the image's batch size, the temporal state's 1 x K x h x w from a
    1 x 1 state (photos) up to the network's long side (video), and the mix's N x (N + 1)."""
    maps, net = metadata.maps, int(metadata.config["net_long_side"])
    state = {"min": [1, maps, 1, 1], "opt": [1, maps, net, net], "max": [1, maps, net, net]}
    shapes: dict[str, dict[str, list[int]]] = {}
    for key in ("min", "opt", "max"):
        batch = profile[key][0]
        every = {
            INPUT_NAME: list(profile[key]),
            APERTURE_NAME: [batch],
            TEMPORAL_STATE_NAME: state[key],
            TEMPORAL_MIX_NAME: [batch, batch + 1],
        }
        shapes[key] = {name: every[name] for name in metadata.inputs}
    return shapes


def ort_profile_options(profile: Profile, metadata: GraphMetadata) -> dict[str, str]:
    """The profile as ONNX Runtime's TensorRT provider options: ``"image:1x38x38x3,aperture:1"``
    for each of min, opt and max (input name, ':', dimensions joined by 'x', inputs joined by
    ','; ``ParseProfileShapes`` in onnxruntime's tensorrt_execution_provider_utils.h). All
    three must be given, or the provider ignores them and builds per input size."""
    return {
        f"trt_profile_{key}_shapes": ",".join(
            f"{name}:{'x'.join(str(d) for d in shape)}" for name, shape in shapes.items()
        )
        for key, shapes in input_shapes(profile, metadata).items()
    }
