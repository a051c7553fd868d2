"""The training plan: the paper's three phases and every knob of a run, in one place.

Paper defaults (docs/DESIGN.md section 1): phase 1 at 384x512 with L1, phase 2 at 768x1024 with L1,
phase 3 at 768x1024 fine-tuned with -SSIM; Adam (0.9, 0.999); the learning rate decays from
1e-3 to 1e-5 over the whole run (here exponentially, per step, across all phases). Each phase
starts from the previous phase's best checkpoint. The paper gives no epoch counts or batch
sizes: ours are stated below and meant to be overridden.

A phase trains the renderer with its input at the training size and ``net_long_side`` equal to
that size's long side, so the checkpoint of a phase carries the network size it was trained at.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from dbsi.train.config import BokehConfig
from dbsi.train.losses import LOSSES


@dataclasses.dataclass(frozen=True)
class Phase:
    name: str
    height: int
    width: int
    loss: str  # a key of dbsi.train.losses.LOSSES
    epochs: int
    batch_size: int

    def __post_init__(self) -> None:
        if self.loss not in LOSSES:
            raise ValueError(f"{self.name}: loss {self.loss!r} is not one of {', '.join(LOSSES)}")
        if self.epochs < 1 or self.batch_size < 1:
            raise ValueError(f"{self.name}: epochs and batch size must be at least 1")
        if self.height % 16 or self.width % 16:
            raise ValueError(
                f"{self.name}: training size {self.height}x{self.width} must be multiples of 16"
            )

    @property
    def net_long_side(self) -> int:
        return max(self.height, self.width)

    @property
    def selection_metric(self) -> str:
        """The validation metric that picks the phase's best checkpoint (higher is better)."""
        return "ssim" if self.loss == "ssim" else "psnr"


# Render defaults come from the render config, the one place that declares them.
_RENDER_DEFAULTS = BokehConfig()


@dataclasses.dataclass(frozen=True)
class TrainingPlan:
    phases: tuple[Phase, ...]
    kernel_sizes: tuple[int, ...] = _RENDER_DEFAULTS.kernel_sizes
    width: float = _RENDER_DEFAULTS.width
    mode: str = _RENDER_DEFAULTS.mode
    lr_start: float = 1e-3
    lr_end: float = 1e-5
    betas: tuple[float, float] = (0.9, 0.999)
    seed: int = 0
    val_fraction: float = 0.1

    def __post_init__(self) -> None:
        object.__setattr__(self, "phases", tuple(self.phases))
        object.__setattr__(self, "kernel_sizes", tuple(self.kernel_sizes))
        object.__setattr__(self, "betas", tuple(self.betas))
        if not self.phases:
            raise ValueError("a plan needs at least one phase")
        for phase in self.phases:
            self.render_config(phase)  # validates kernel sizes, width and mode against sizes
        if not 0 < self.lr_end <= self.lr_start:
            raise ValueError(f"learning rate must decay: {self.lr_start} -> {self.lr_end}")

    def render_config(self, phase: Phase) -> BokehConfig:
        return BokehConfig(
            kernel_sizes=self.kernel_sizes,
            net_long_side=phase.net_long_side,
            mode=self.mode,
            width=self.width,
        )

    def phase(self, name: str) -> Phase:
        for phase in self.phases:
            if phase.name == name:
                return phase
        raise ValueError(f"no phase {name!r} (phases: {', '.join(p.name for p in self.phases)})")

    def to_dict(self) -> dict[str, Any]:
        return json_ready(dataclasses.asdict(self))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainingPlan:
        data = dict(data)
        data["phases"] = tuple(Phase(**p) for p in data["phases"])
        return cls(**data)


def json_ready(value: Any) -> Any:
    """Tuples as lists, recursively: the plan as JSON and torch.load(weights_only) keep it."""
    if isinstance(value, dict):
        return {k: json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_ready(v) for v in value]
    return value


def learning_rate(plan: TrainingPlan, step: int, total_steps: int) -> float:
    """Exponential decay per step from ``lr_start`` (step 0) to ``lr_end`` (the last step)."""
    progress = min(1.0, step / max(1, total_steps - 1))
    return plan.lr_start * math.exp(progress * math.log(plan.lr_end / plan.lr_start))


PAPER = TrainingPlan(
    phases=(
        Phase("phase1", 384, 512, "l1", epochs=20, batch_size=8),
        Phase("phase2", 768, 1024, "l1", epochs=10, batch_size=2),
        Phase("phase3", 768, 1024, "ssim", epochs=5, batch_size=2),
    )
)

# For CPU demos and tests: an eighth of the width, kernels scaled down, lr raised for short
# runs. One small network size for all phases: at width 0.125 and a CPU budget, a second,
# larger size measured worse on the synthetic set (the net sees too little context), so the
# tiny phases differ by loss and schedule only. Validation still renders at full resolution.
TINY = TrainingPlan(
    phases=(
        Phase("phase1", 48, 64, "l1", epochs=8, batch_size=8),
        Phase("phase2", 48, 64, "l1", epochs=3, batch_size=8),
        Phase("phase3", 48, 64, "ssim", epochs=1, batch_size=8),
    ),
    kernel_sizes=(5, 11, 21),
    width=0.125,
    lr_start=3e-3,
)

PRESETS = {"paper": PAPER, "tiny": TINY}


def parse_size(text: str) -> tuple[int, int]:
    """``"384x512"`` -> (384, 512)."""
    try:
        height, width = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise ValueError(f"size {text!r} is not HEIGHTxWIDTH, e.g. 384x512") from None
    return height, width


def per_phase(text: str, count: int, parse: Any) -> list[Any]:
    """``"a"`` or ``"a,b,c"`` -> one value per phase."""
    values = [parse(v) for v in text.split(",")]
    if len(values) == 1:
        return values * count
    if len(values) != count:
        raise ValueError(f"{text!r}: give one value or one per phase ({count})")
    return values


def with_overrides(
    plan: TrainingPlan,
    sizes: str | None = None,
    epochs: str | None = None,
    batch_size: str | None = None,
    **fields: Any,
) -> TrainingPlan:
    """The plan with per-phase and global overrides.

    ``sizes``, ``epochs`` and ``batch_size`` take one value for every phase or a comma list with
    one per phase; other ``fields`` (kernel_sizes, width, mode, lr_start, ...) replace the
    plan's when not None.
    """
    phases = list(plan.phases)
    n = len(phases)
    if sizes:
        phases = [
            dataclasses.replace(p, height=h, width=w)
            for p, (h, w) in zip(phases, per_phase(sizes, n, parse_size))
        ]
    if epochs:
        phases = [
            dataclasses.replace(p, epochs=e) for p, e in zip(phases, per_phase(epochs, n, int))
        ]
    if batch_size:
        phases = [
            dataclasses.replace(p, batch_size=b)
            for p, b in zip(phases, per_phase(batch_size, n, int))
        ]
    changes = {k: v for k, v in fields.items() if v is not None}
    return dataclasses.replace(plan, phases=tuple(phases), **changes)
