"""The pixels-in, pixels-out contract that every exported graph follows and every backend
feeds (docs/ARTEFACTS.md). The exporter writes it and the runtime reads it: both import these
names from here, which needs no torch."""

ONNX_FORMAT = "dbsi-onnx"
ONNX_FORMAT_VERSION = 1

INPUT_NAME = "image"
OUTPUT_NAME = "bokeh"
WEIGHTS_NAME = "weights"

PRECISIONS = ("fp32", "fp16")
# Every ``dbsi.*`` metadata entry an export writes (docs/ARTEFACTS.md).
REQUIRED_KEYS = (
    "dbsi.format",
    "dbsi.format_version",
    "dbsi.config",
    "dbsi.layout",
    "dbsi.color_order",
    "dbsi.input_dtype",
    "dbsi.min_input_side",
    "dbsi.max_input_side",
    "dbsi.outputs",
    "dbsi.precision",
    "dbsi.checkpoint_sha256",
    "dbsi.toolkit_version",
)

# What the runtime feeds every graph: it decodes with OpenCV and never converts.
INPUT_LAYOUT = {"dbsi.layout": "NHWC", "dbsi.color_order": "BGR", "dbsi.input_dtype": "uint8"}

# Limits of the exported graph's dynamic dimensions (the minimum side comes from the config).
MAX_BATCH = 256
MAX_SIDE = 8192
