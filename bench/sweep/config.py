"""Sweep configurations: a YAML file validated by pydantic, with command-line overrides.

An experiment is data, not code: the grid is data sets x models x protection methods x protection
budgets x attacks x attacker budgets x seeds. Validation names the key's path and what is allowed, on
one line; `--set protect.eps=[0.5,1.0]` overrides any key.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, get_args

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from bench.errors import BenchError


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _as_list(value: Any) -> Any:
    return value if isinstance(value, list) else [value]


class Training(Strict):
    epochs: int = Field(10, ge=1)
    lr: float = Field(0.05, gt=0)
    optimizer: Literal["sgd", "adam"] = "sgd"
    batch_size: int = Field(128, ge=1)
    weight_decay: float = Field(5e-4, ge=0)


class ModelEntry(Strict):
    name: str
    args: dict[str, Any] = {}
    training: Training = Training()
    # None: each grid seed trains its own baseline (the spread includes training); an int: one baseline,
    # trained with this seed, shared by every grid seed (which then varies the owner's and attacker's draws).
    train_seed: int | None = None


class DatasetEntry(Strict):
    name: str  # a registered data set (bench.zoo.data.DATASETS)
    path: str | None = None  # for a data set that needs one (imagefolder): its folder
    models: list[ModelEntry] = Field(min_length=1)
    owner_samples: int = Field(512, ge=1)

    @field_validator("name")
    @classmethod
    def _registered(cls, name: str) -> str:
        # imported on use, as the registry imports torch: reading a config stays quick
        from bench.zoo.data import DATASETS

        DATASETS.get(name)  # an unknown name: one line listing the registered ones
        return name

    @model_validator(mode="after")
    def _path_if_needed(self) -> DatasetEntry:
        from bench.zoo.data import DATASETS

        source = DATASETS.get(self.name)
        if source.needs_path and not self.path:
            raise ValueError(f"the {self.name} data set needs 'path' ({source.path})")
        return self


class Protect(Strict):
    """The protection grid: every method at every (max_params, eps) cell.

    ``match`` maps a method to the method whose scalar count it takes in the same cell (``{random:
    advparams}``: the control changes as many scalars as AdvParams did; ignored for a method not run); ``options`` holds each method's
    own options (``{advparams: {loss: margin}}``), checked against what it declares when planning.
    ``method_max_params`` gives a method budgets of its own in place of ``max_params`` (``{keyed_lock: [256,
    6144]}``): methods whose budgets lie far apart share one sweep without running each at the others' budgets.
    """

    methods: list[str] = Field(["advparams", "random"], min_length=1)
    max_params: list[int] = Field([64], min_length=1)
    eps: list[float] = Field([1.0], min_length=1)
    params_per_step: int = Field(1, ge=1)
    target_accuracy: float | None = Field(None, ge=0, le=1)
    layers: list[str] | None = None
    stay_in_range: bool = True
    match: dict[str, str] = {}
    options: dict[str, dict[str, Any]] = {}
    method_max_params: dict[str, list[int]] = {}

    _lists = field_validator("methods", "max_params", "eps", mode="before")(_as_list)

    def budgets(self, method: str) -> list[int]:
        """The max_params values ``method`` runs at."""
        return self.method_max_params.get(method, self.max_params)

    @field_validator("methods")
    @classmethod
    def _registered_methods(cls, v: list[str]) -> list[str]:
        from protect.registry import METHODS  # on use (it imports torch)

        for name in v:
            METHODS.get(name)  # a one-line error listing the registered methods
        return v

    @field_validator("match")
    @classmethod
    def _match_within_methods(cls, v: dict[str, str], info: ValidationInfo) -> dict[str, str]:
        if "methods" not in info.data:  # already refused
            return v
        run = info.data["methods"]
        for method, target in v.items():
            if method not in run:
                continue  # a method this sweep does not run: its match is not used (--set protect.methods=...)
            if target not in run:
                raise ValueError(f"{method!r} matches {target!r}, which is not in protect.methods ({', '.join(run)})")
            if method == target:
                raise ValueError(f"{method!r} cannot match itself")
            if target in v:
                raise ValueError(f"{method!r} matches {target!r}, which matches {v[target]!r} in turn; "
                                 "a method matched to cannot match another")
        return v

    @field_validator("max_params")
    @classmethod
    def _positive_counts(cls, v: list[int]) -> list[int]:
        if any(n < 1 for n in v):
            raise ValueError("every max_params must be >= 1")
        return v

    @field_validator("method_max_params")
    @classmethod
    def _own_budgets(cls, v: dict[str, list[int]]) -> dict[str, list[int]]:
        from protect.registry import METHODS

        for method, counts in v.items():
            METHODS.get(method)
            if not counts or any(n < 1 for n in counts):
                raise ValueError(f"{method!r}: give at least one max_params, each >= 1")
        return v

    @model_validator(mode="after")
    def _matched_budgets_are_run(self) -> Protect:
        for method, target in self.match.items():
            if method in self.methods and target in self.methods:
                missing = sorted(set(self.budgets(method)) - set(self.budgets(target)))
                if missing:
                    raise ValueError(f"{method!r} matches {target!r}, which does not run at max_params {missing}: "
                                     "a matched method runs only where the method it matches does")
        return self

    @field_validator("eps")
    @classmethod
    def _positive_eps(cls, v: list[float]) -> list[float]:
        if any(e <= 0 for e in v):
            raise ValueError("every eps must be > 0")
        return v


class Attacks(Strict):
    """The attacks and the attacker budgets: data shares (``fractions``) and compute caps (``epochs``, in
    epoch-equivalents over the attacker's own training split, shared by all ``trials`` of an attack's tuning).
    Several shares or caps make curves: stolen value against data and against compute."""

    names: list[str] = Field(["all"], min_length=1)
    methods: list[str] | None = Field(None, min_length=1)  # protection methods whose models are attacked (default: all)
    fractions: list[float] = Field([0.1], min_length=1)
    trials: int = Field(3, ge=1)
    epochs: list[int] = Field([10], min_length=1)
    val_fraction: float = Field(0.2, gt=0, lt=1)
    params: dict[str, dict[str, Any]] = {}  # fixed (untuned) parameters per attack

    _lists = field_validator("names", "fractions", "epochs", mode="before")(_as_list)

    @field_validator("epochs")
    @classmethod
    def _caps_not_negative(cls, v: list[int]) -> list[int]:
        if any(e < 0 for e in v):
            raise ValueError("every compute cap (epochs) must be >= 0")
        return v

    @field_validator("fractions")
    @classmethod
    def _fractions_in_range(cls, v: list[float]) -> list[float]:
        if any(not 0 < f < 1 for f in v):
            raise ValueError("every attacker fraction must be in (0, 1)")
        return v


class Resources(Strict):
    """What one job of a kind asks Ray for; fractional GPUs share a card (a scheduling hint only)."""

    num_cpus: float = Field(1, gt=0)
    num_gpus: float = Field(0, ge=0)


class Jobs(Strict):
    train: Resources = Resources()
    encrypt: Resources = Resources()
    attack: Resources = Resources()
    max_retries: int = Field(2, ge=0)  # retries after a worker or node is lost
    runtime_env: dict[str, Any] | None = None  # Ray runtime_env when joining a cluster (working_dir, pip)
    # Mixed precision and channels_last in training and evaluation (common.acceleration): auto = on CUDA
    # only. Execution settings like num_cpus: not part of a job's id; each run is tagged with what it used.
    amp: Literal["auto", "on", "off"] = "auto"
    channels_last: Literal["auto", "on", "off"] = "auto"
    # Seconds the driver waits for the Ray cluster it joins and for a tracking server to answer (a server
    # still starting gets that long), before one line says which did not.
    connect_timeout: float = Field(30, gt=0)


DEFAULT_TOLERANCE = 2.0
"""The stolen value (points) a protection may leave and still hold, unless the config says otherwise."""


class Report(Strict):
    """How results are judged; not part of the grid's identity, so a new tolerance re-judges finished jobs."""

    tolerance: float = Field(DEFAULT_TOLERANCE, ge=0)  # points of stolen value


class Tracking(Strict):
    uri: str = "sqlite:///mlflow.db"
    experiment: str | None = None  # default: the config's name
    archive: str | None = None  # a JSON-lines file of every finished job's result, to commit (`bench.sweep.archive`)


class SweepConfig(Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    seeds: list[int] = Field([0], min_length=1)
    storage: str = "runs"  # models, keys and studies: a folder every node reaches, or an object store URL (s3://...)
    data_root: str | None = None
    download: bool = False
    datasets: list[DatasetEntry] = Field(min_length=1)
    protect: Protect = Protect()
    attacks: Attacks = Attacks()
    jobs: Jobs = Jobs()
    tracking: Tracking = Tracking()
    report: Report = Report()

    _lists = field_validator("seeds", mode="before")(_as_list)

    @model_validator(mode="after")
    def _attacked_methods_are_protected(self) -> SweepConfig:
        missing = set(self.attacks.methods or []) - set(self.protect.methods)
        if missing:
            raise ValueError(f"attacks.methods names {sorted(missing)}, which protect.methods does not run")
        return self

    @property
    def experiment(self) -> str:
        return self.tracking.experiment or self.name


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader, refusing a key repeated in one mapping (PyYAML would keep the last value silently;
    YAML itself requires keys to be unique)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue  # `<<: *anchor`: its keys may be overridden by the mapping's own
            key, line = self.construct_object(key_node, deep=True), key_node.start_mark.line + 1
            try:
                repeated = key in seen
            except TypeError:  # an unhashable key: the safe loader refuses it below
                continue
            if repeated:
                raise yaml.constructor.ConstructorError(
                    problem=f"key {key!r} appears twice in one mapping (first at line {seen[key]})",
                    problem_mark=key_node.start_mark)
            seen[key] = line
        return super().construct_mapping(node, deep)


def _read_yaml(text: str) -> Any:
    """YAML text as Python values, a repeated key refused."""
    return yaml.load(text, Loader=_UniqueKeyLoader)


def apply_override(raw: dict[str, Any], assignment: str) -> None:
    """Apply one ``dotted.path=value`` override (value parsed as YAML) to the raw config dict."""
    if "=" not in assignment:
        raise BenchError(f"--set expects path=value, got {assignment!r}")
    path, text = assignment.split("=", 1)
    keys = [k for k in path.strip().split(".") if k]
    if not keys:
        raise BenchError(f"--set has an empty path: {assignment!r}")
    try:
        value = _read_yaml(text)
    except yaml.YAMLError as err:
        raise BenchError(f"--set {path}: cannot parse value {text!r} ({_problem(err)})") from None
    node: Any = raw
    for i, key in enumerate(keys[:-1]):
        if isinstance(node, list) and key.isdigit() and int(key) < len(node):
            node = node[int(key)]
        elif isinstance(node, dict):
            node = node.setdefault(key, {})
        else:
            raise BenchError(f"--set {path}: {'.'.join(keys[: i + 1])} is not a section")
    last = keys[-1]
    if isinstance(node, list) and last.isdigit() and int(last) < len(node):
        node[int(last)] = value
    elif isinstance(node, dict):
        node[last] = value
    else:
        raise BenchError(f"--set {path}: {'.'.join(keys[:-1])} is not a section")


def _allowed_keys(loc: tuple[Any, ...]) -> list[str]:
    """The keys the config section at ``loc`` (a pydantic error location) accepts."""
    section: Any = SweepConfig
    for part in loc:
        if isinstance(part, int):
            continue  # an item of a list: the list's item type was taken already
        section = section.model_fields[part].annotation
        section = next((a for a in get_args(section) if isinstance(a, type) and issubclass(a, BaseModel)), section)
    return list(section.model_fields)


def _one_line(err: ValidationError, source: str) -> str:
    parts = []
    for e in err.errors():
        loc = ".".join(str(x) for x in e["loc"]) or "(top level)"
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            msg = f"unknown key; allowed: {', '.join(_allowed_keys(e['loc'][:-1]))}"
        parts.append(f"{loc}: {msg}")
    return f"{source}: " + "; ".join(parts)


def parse_config(raw: Any, source: str = "config", overrides: list[str] | tuple[str, ...] = ()) -> SweepConfig:
    if not isinstance(raw, dict):
        raise BenchError(f"{source}: expected a mapping of keys at the top level")
    for assignment in overrides:
        apply_override(raw, assignment)
    try:
        return SweepConfig.model_validate(raw)
    except ValidationError as err:
        raise BenchError(_one_line(err, source)) from None


def load_config(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> SweepConfig:
    """Read, override and validate a sweep config file."""
    path = Path(path)
    if not path.is_file():
        raise BenchError(f"config file not found: {path}")
    try:
        raw = _read_yaml(path.read_text())
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise BenchError(f"{path}: not valid YAML{where}: {_problem(err)}") from None
    return parse_config(raw, str(path), overrides)


def _problem(err: yaml.YAMLError) -> str:
    """What a YAML error says is wrong, without its multi-line excerpt of the file."""
    return getattr(err, "problem", None) or err.__class__.__name__
