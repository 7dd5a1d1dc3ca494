"""The training configuration: frozen dataclasses read from YAML; unknown keys are errors."""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from mirage_lsd.models.builtin.config import ConfigError, ModelConfig, config_from_dict
from mirage_lsd.training.data import DataConfig

FULL_RES_LOSSES = ("l1", "mse", "l1+mse")


@dataclass(frozen=True)
class OptimConfig:
    lr: float = 2e-3
    min_lr: float = 1e-4  # cosine decay ends here
    warmup: int = 100  # steps of linear warmup
    weight_decay: float = 0.01
    beta1: float = 0.9
    beta2: float = 0.99
    grad_clip: float = 1.0
    # 0: export the last step's weights; else their moving average with this decay per
    # step, warmed up (about the last min(steps / 9, 1 / (1 - ema)) steps; training/ema.py)
    ema: float = 0.0

    def __post_init__(self) -> None:
        if not self.lr > 0:
            raise ConfigError(f"optim.lr must be > 0, got {self.lr}")
        if not 0 <= self.min_lr <= self.lr:
            raise ConfigError(f"optim.min_lr must be from 0 to optim.lr, got {self.min_lr}")
        for name in ("beta1", "beta2"):
            value = getattr(self, name)
            if not 0 <= value < 1:
                raise ConfigError(f"optim.{name} must be from 0 to below 1, got {value}")
        if self.warmup < 0 or self.weight_decay < 0:
            raise ConfigError("optim.warmup and optim.weight_decay must be >= 0")
        if not self.grad_clip > 0:
            raise ConfigError(f"optim.grad_clip must be > 0, got {self.grad_clip}")
        if not 0 <= self.ema < 1:
            raise ConfigError(f"optim.ema must be from 0 to below 1, got {self.ema}")


@dataclass(frozen=True)
class ObjectiveConfig:
    """How each frame of a sequence is noised, conditioned and scored."""

    # the batch of each frame splits three ways by step size (the rest is flow matching)
    shortcut_fraction: float = 0.25  # self-consistency: one step of 2d = two steps of d
    direct_fraction: float = 0.25  # run-time step sizes (1/1..1/max_steps), real target
    full_res_weight: float = 1.0  # weight of the guided-upsampled output's error
    # that error: "l1" (the median: crisp where the look is ambiguous), "mse" (the mean:
    # what PSNR scores) or "l1+mse" (their sum: L1's steady pull on small errors, the
    # square's stronger one on large ones, a missed line); the low-res x0 is always
    # scored by its MSE
    full_res_loss: str = "l1"
    # False: self-consistency samples are scored at low resolution only, against the
    # model's own two half steps; True (the bundled recipe): their full-resolution output
    # is also pulled to the real target, a regression mixed into the consistency objective
    shortcut_full_res: bool = True
    # divide each sample's loss by a power of its look's running mean loss
    # (`training/balance.py`), so that the looks a small network nearly has are not
    # drowned out by those it never matches (the benchmark averages dB, a log of the error)
    look_balance: bool = True
    # the weights are (look's running loss)^-power, relative: 1 follows the log loss fully
    # (a full run turned thin lines to blocks); 0.5 is the bundled recipe's
    look_balance_power: float = 0.5
    # history augmentation (diffusion forcing: the history has its own noise level)
    p_own_history: float = 0.7  # history from the model's own previous output
    # that output as at run time (a one-step jump from pure noise, no gradient; one more
    # forward pass per frame), instead of this step's training prediction at its own t
    own_history_run_time: bool = True
    # with it, the temporal cache is also filled as at run time: the next frame attends to
    # the keys/values of that one-step pass from noise, not of this step's pass at its own
    # t (at a small t they carry the target itself, which no run-time cache does); no
    # gradient flows through the cache then (each frame's keys still learn from its own)
    cache_run_time: bool = False
    p_drop_history: float = 0.1  # no history at all (a cut, a reset)
    history_blur: float = 1.5  # largest Gaussian blur, low-res pixels
    history_color_shift: float = 0.1  # largest gain/offset change per channel
    history_misalign: float = 1.0  # largest flow error, flow pixels
    history_max_sigma: float = 0.3  # largest history noise level
    p_clean_history: float = 0.5  # share of frames whose history is not noised

    def __post_init__(self) -> None:
        if self.full_res_loss not in FULL_RES_LOSSES:
            raise ConfigError(
                f"objective.full_res_loss must be one of {', '.join(FULL_RES_LOSSES)}, "
                f"got {self.full_res_loss!r}"
            )
        shares = ("shortcut_fraction", "direct_fraction", "p_own_history", "p_drop_history",
                  "p_clean_history")  # fmt: skip
        for name in shares:
            value = getattr(self, name)
            if not 0 <= value <= 1:
                raise ConfigError(f"objective.{name} must be from 0 to 1, got {value}")
        if self.shortcut_fraction + self.direct_fraction > 1:
            raise ConfigError("objective.shortcut_fraction + direct_fraction must be at most 1")
        if not 0 < self.look_balance_power <= 1:  # what LookBalance takes, checked up front
            raise ConfigError(
                f"objective.look_balance_power must be in (0, 1], got {self.look_balance_power}"
            )
        if not 0 <= self.history_max_sigma <= 1:  # a noise level: 1 is pure noise
            raise ConfigError(
                f"objective.history_max_sigma must be from 0 to 1, got {self.history_max_sigma}"
            )
        amounts = ("full_res_weight", "history_blur", "history_color_shift", "history_misalign")
        for name in amounts:
            value = getattr(self, name)
            if not 0 <= value < math.inf:
                raise ConfigError(f"objective.{name} must be >= 0, got {value}")


@dataclass(frozen=True)
class TrainConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)
    seed: int = 0
    steps: int = 7000
    batch_size: int = 8
    threads: int = 2  # torch and OpenCV threads
    eval_every: int = 500
    eval_sequences: int = 16  # one per look
    checkpoint_every: int = 250
    out_dir: str = "runs/builtin"
    # start from this weight file instead of random weights (fine-tuning); its model
    # config must be `model`. Empty: from scratch. Ignored on --resume.
    init_weights: str = ""

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "threads", "eval_every", "eval_sequences",
                     "checkpoint_every"):  # fmt: skip
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not 0 <= self.seed < 2**63:  # as the engine's seeds; torch's would go to 2**64
            raise ConfigError(f"seed must be from 0 to 2**63 - 1, got {self.seed}")
        # the network takes frames whose sides divide by this; found here, not at step 500
        m = self.model.size_multiple
        for name in ("crop", "view"):
            side = getattr(self.data, name)
            if side % m:
                raise ConfigError(
                    f"data.{name} must be a multiple of {m} (model.image_downscale x "
                    f"the network's grid), got {side}"
                )
        # the edge guide's strength scales with the frame it sees: in training the crop,
        # at run time the whole (view-sized) frame, so the two would disagree
        if self.model.edge_guide and self.data.view > self.data.crop:
            raise ConfigError(
                "model.edge_guide needs data.view 0 or equal to data.crop: the edge map "
                f"would be trained at the {self.data.crop} crop's scale, not the view's"
            )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader, but a key given twice in one mapping is an error, and numbers
    like `5e-4` are floats (YAML 1.2; PyYAML's 1.1 rules read them as text).

    Why: plain YAML keeps the last value, so an edited copy of a config that adds
    `experts: 8` above an existing `experts: 0` would silently train without it.
    """

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *base`: its keys may be
                continue  # overridden here (the base class merges them in, ours winning)
            if not isinstance(key_node, yaml.ScalarNode):
                raise yaml.constructor.ConstructorError(
                    None, None, "a key must be a plain name", key_node.start_mark
                )
            key = self.construct_object(key_node, deep=deep)  # type: ignore[no-untyped-call]
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} is given twice", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


_UniqueKeyLoader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:float"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_UniqueKeyLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
        |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
        |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
        |[-+]?\.(?:inf|Inf|INF)
        |\.(?:nan|NaN|NAN))$""",
        re.X,
    ),
    list("-+0123456789."),
)


def load_train_config(path: Path) -> TrainConfig:
    """Read a YAML training config; every problem is a ConfigError naming file and field."""
    try:
        data = yaml.load(Path(path).read_text(), Loader=_UniqueKeyLoader) or {}
    except OSError as exc:
        raise ConfigError(f"cannot read config {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"config {path} is not a text file") from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        problem = exc.problem or exc.context or "unreadable"
        raise ConfigError(f"config {path} is not valid YAML{where}: {problem}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"config {path} is not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config {path} must be a mapping of fields, got a {type(data).__name__}")
    try:
        return config_from_dict(TrainConfig, data, "")
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None
