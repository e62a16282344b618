"""The plan: a sweep config expanded into job specs, each named by a hash of what determines its result.

A job's id is the hash of its resolved spec and of ``RESULTS_VERSION`` (bumped when a code change would
change results, not on every commit, so finished jobs and caches survive ordinary work). Rerunning a config
therefore finds the same ids and skips what is finished.
"""

from __future__ import annotations

import hashlib
import importlib
import itertools
import json
from dataclasses import asdict, dataclass, field
from functools import cached_property
from typing import Any

from attacks import AttackError, attack_names, get_attack
from bench.errors import BenchError
from bench.sweep.config import DatasetEntry, ModelEntry, Protect, SweepConfig
from bench.zoo.models import MODELS, TORCHVISION_PREFIX
from common.errors import first_line
from protect import METHODS, ProtectError, check_options

#: Per kind of job: bump when a change to the code would change the results of its finished jobs (2 for
#: attacks: the compute cap covers all trials, training stops early, and tuning starts from recipes).
RESULTS_VERSION = {"train": 1, "encrypt": 1, "attack": 2}

#: The most jobs a sweep plans unless told otherwise (`advparams sweep --max-jobs`). A 95,200-job grid grew the
#: driver past 2.2 GB before any job ran (about 23 KB a job), so 20,000 keep it under half a gigabyte; that is
#: above the largest shipped grid (configs/paper-gpu.yaml: 14,745 jobs), so a bigger grid is more
#: likely a list grown by mistake than a plan.
MAX_JOBS = 20_000


def stable_hash(payload: Any, length: int = 16) -> str:
    """A short SHA-256 of a JSON-serialisable payload, independent of key order."""
    blob = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:length]


def _cell_label(max_params: int, eps: float) -> str:
    return f"n={max_params},eps={eps:g}"


ALL_CELLS = "all"
"""The cell label of a method that replaces every candidate weight (reinit): the budget does not apply to it,
so it runs once per baseline and seed, not once per cell."""


def changes_all(method: str) -> bool:
    return METHODS.get(method).changes_all


@dataclass(frozen=True)
class TrainJob:
    dataset: str
    dataset_path: str | None
    model: str
    model_args: dict[str, Any]
    training: dict[str, Any]  # bench.sweep.config.Training fields
    seed: int

    kind = "train"

    @cached_property  # an id is asked for often (by every job that depends on this one): hashed once
    def id(self) -> str:
        return stable_hash({"kind": self.kind, **asdict(self), "v": RESULTS_VERSION[self.kind]})

    @property
    def name(self) -> str:
        return f"{self.dataset}/{self.model}/seed={self.seed}/train"

    def file_name(self) -> str:
        return f"{self.dataset}-{self.model.replace(':', '_')}-s{self.seed}-{self.id}.safetensors"


@dataclass(frozen=True)
class EncryptJob:
    train: TrainJob
    method: str
    budget: dict[str, Any]  # protect.Budget.to_dict(): its seed the grid's, its options resolved
    owner_samples: int
    match: str | None = None  # id of the job (in the same cell) whose scalar count this job takes

    kind = "encrypt"

    @cached_property
    def id(self) -> str:
        return stable_hash({"kind": self.kind, "train": self.train.id, "method": self.method,
                            "budget": self.budget, "owner_samples": self.owner_samples, "match": self.match, "v": RESULTS_VERSION[self.kind]})

    @property
    def cell(self) -> str:
        return ALL_CELLS if changes_all(self.method) else _cell_label(self.budget["max_params"], self.budget["eps"])

    @property
    def seed(self) -> int:
        """The grid's seed: it draws the owner's samples and seeds the method."""
        return int(self.budget["seed"])

    @property
    def name(self) -> str:
        return f"{self.train.dataset}/{self.train.model}/{self.method}[{self.cell}]/seed={self.seed}"


@dataclass(frozen=True)
class AttackJob:
    train: TrainJob
    encrypt: EncryptJob | None  # None: an attack that ignores the stolen weights (the scratch reference)
    attack: str
    fraction: float
    trials: int
    epochs: int
    val_fraction: float
    owner_samples: int
    seed: int  # the grid's: it draws the attacker's share and seeds the attack and its tuning
    fixed: dict[str, Any] = field(default_factory=dict)

    kind = "attack"

    @cached_property
    def id(self) -> str:
        return stable_hash({"kind": self.kind, "train": self.train.id,
                            "encrypt": self.encrypt.id if self.encrypt else None, "attack": self.attack,
                            "fraction": self.fraction, "trials": self.trials, "epochs": self.epochs,
                            "val_fraction": self.val_fraction, "owner_samples": self.owner_samples, "seed": self.seed, "fixed": self.fixed, "v": RESULTS_VERSION[self.kind]})

    @property
    def name(self) -> str:
        target = f"{self.encrypt.method}[{self.encrypt.cell}]" if self.encrypt else "from-scratch"
        return (f"{self.train.dataset}/{self.train.model}/{target}/{self.attack}@{self.fraction:.0%},{self.epochs}ep"
                f"/seed={self.seed}")


Job = TrainJob | EncryptJob | AttackJob


@dataclass(frozen=True)
class Plan:
    trains: list[TrainJob]
    encrypts: list[EncryptJob]
    attacks: list[AttackJob]

    @property
    def jobs(self) -> list[Job]:
        return [*self.trains, *self.encrypts, *self.attacks]

    def counts(self) -> dict[str, int]:
        return {"train": len(self.trains), "encrypt": len(self.encrypts), "attack": len(self.attacks)}


def dependencies(job: Job) -> list[str]:
    """Ids of the jobs whose results ``job`` takes, in the order `bench.sweep.jobs.run_job` expects them."""
    if isinstance(job, TrainJob):
        return []
    if isinstance(job, EncryptJob):
        return [job.train.id] + ([job.match] if job.match else [])
    return [job.train.id, job.encrypt.id] if job.encrypt else [job.train.id]


def resolve_attacks(names: list[str], registered: list[str]) -> list[str]:
    """Expand ``all`` to every registered attack; keep the given order otherwise."""
    unknown = [n for n in names if n != "all" and n not in registered]
    if unknown:
        raise BenchError(f"attacks.names: unknown attack {unknown[0]!r}; registered: {', '.join(registered)}")
    out: list[str] = []
    for name in names:
        for n in registered if name == "all" else [name]:
            if n not in out:
                out.append(n)
    return out


def make_plan(cfg: SweepConfig, registered_attacks: list[str], weight_free: set[str]) -> Plan:
    """Expand the grid. ``weight_free`` names the attacks that ignore the stolen weights (run once per
    baseline and attacker budget rather than once per encrypted model)."""
    trains: dict[str, TrainJob] = {}  # a baseline with a fixed train_seed is shared by every grid seed
    encrypts: list[EncryptJob] = []
    attacks: list[AttackJob] = []
    names = resolve_attacks(cfg.attacks.names, registered_attacks)
    attacked_methods = set(cfg.attacks.methods or cfg.protect.methods)
    p = cfg.protect
    options = method_options(p)
    # The jobs others match come first in each cell, so the driver can hand their results over.
    order = [m for m in p.methods if m in p.match.values()] + [m for m in p.methods if m not in p.match.values()]
    for ds, seed in itertools.product(cfg.datasets, cfg.seeds):
        for m in ds.models:
            train = _train_job(ds, m, seed)
            trains.setdefault(train.id, train)
            cell_jobs: list[EncryptJob] = []
            for number, (max_params, eps) in enumerate(itertools.product(budget_grid(p), p.eps)):
                shared = {"max_params": max_params, "eps": eps, "params_per_step": p.params_per_step,
                          "target_accuracy": p.target_accuracy, "layers": p.layers,
                          "stay_in_range": p.stay_in_range, "seed": seed}
                cell: dict[str, EncryptJob] = {}
                for method in order:
                    if number and changes_all(method):  # its first cell's job stands for every cell
                        continue
                    if not changes_all(method) and max_params not in p.budgets(method):
                        continue
                    match = cell[p.match[method]].id if method in p.match else None
                    budget = {**shared, "options": options[method]}
                    cell[method] = EncryptJob(train, method, budget, ds.owner_samples, match)
                cell_jobs.extend(cell.values())
            encrypts.extend(cell_jobs)
            common = dict(trials=cfg.attacks.trials, val_fraction=cfg.attacks.val_fraction,
                          owner_samples=ds.owner_samples, seed=seed)
            targets = [enc for enc in cell_jobs if enc.method in attacked_methods]
            for attack, fraction, epochs in itertools.product(names, cfg.attacks.fractions, cfg.attacks.epochs):
                fixed = dict(cfg.attacks.params.get(attack, {}))
                if attack in weight_free:
                    attacks.append(AttackJob(train, None, attack, fraction, epochs=epochs, fixed=fixed, **common))
                else:
                    attacks.extend(AttackJob(train, enc, attack, fraction, epochs=epochs, fixed=fixed, **common)
                                   for enc in targets)
    return Plan(list(trains.values()), _unique(encrypts), _unique(attacks))


def budget_grid(p: Protect) -> list[int]:
    """Every max_params some method runs at, ``max_params``'s own first and in order (a method that changes
    every weight runs in the first cell), each once."""
    return list(dict.fromkeys([*p.max_params, *(n for m in p.methods for n in p.budgets(m))]))


def _train_job(ds: DatasetEntry, m: ModelEntry, seed: int) -> TrainJob:
    """The baseline a grid seed's jobs start from: trained with that seed, or with the model's fixed one."""
    train_seed = seed if m.train_seed is None else m.train_seed
    return TrainJob(ds.name, ds.path, m.name, dict(m.args), m.training.model_dump(), train_seed)


def count_jobs(cfg: SweepConfig, registered_attacks: list[str], weight_free: set[str]) -> dict[str, int]:
    """``make_plan(cfg, ...).counts()`` without building the jobs, so a grid of a million is refused in a moment.

    The grid is blocks of (baseline, grid seed, owner samples), one per data set, seed and model, each with
    the same jobs inside: every method in each of its cells (once for a method that changes all weights), and every
    attack at every attacker budget (once per attacked model, or once for an attack that ignores the weights).
    Repeated entries plan a job once, so only distinct blocks, cells, methods, shares and caps count.
    """
    p, a = cfg.protect, cfg.attacks
    methods = set(p.methods)
    models = lambda names: sum(1 if changes_all(m) else len(set(itertools.product(p.budgets(m), p.eps)))  # noqa: E731
                               for m in names)
    attacked = models(methods & set(a.methods or p.methods))
    per_budget = sum(1 if name in weight_free else attacked for name in resolve_attacks(a.names, registered_attacks))
    trains: set[str] = set()
    blocks: set[tuple[str, int, int]] = set()
    for ds, seed in itertools.product(cfg.datasets, cfg.seeds):
        for m in ds.models:
            train = _train_job(ds, m, seed)
            trains.add(train.id)
            blocks.add((train.id, seed, ds.owner_samples))
    return {"train": len(trains), "encrypt": len(blocks) * models(methods),
            "attack": len(blocks) * len(set(a.fractions)) * len(set(a.epochs)) * per_budget}


def method_options(p: Protect) -> dict[str, dict[str, Any]]:
    """Every method's options (``protect.options``), checked against what the method declares, defaults
    filled in; one line naming ``protect.options.<method>`` and the problem otherwise."""
    out = {}
    for method in [*p.methods, *(m for m in p.options if m not in p.methods)]:
        try:
            out[method] = check_options(method, p.options.get(method, {}))
        except ProtectError as err:
            raise BenchError(f"protect.options.{method}: {err}") from None
    return out


def _unique(jobs: list) -> list:
    """Jobs in plan order, each id once: repeated config entries (seeds: [0, 0]) plan the same job twice."""
    seen: dict[str, Any] = {}
    for job in jobs:
        seen.setdefault(job.id, job)
    return list(seen.values())


def weight_free_attacks() -> set[str]:
    """Attacks that ignore the stolen weights run once per baseline and attacker budget."""
    return {name for name in attack_names() if not get_attack(name).uses_weights}


def check_plan(cfg: SweepConfig, max_jobs: int | None = None) -> dict[str, int]:
    """Check what can be checked without data or Ray and count the jobs of each kind, no job built: model,
    attack and method names against their registries, fixed attack parameters and method options against
    what each declares, and the number of jobs against ``max_jobs`` (None: `MAX_JOBS`)."""
    max_jobs = MAX_JOBS if max_jobs is None else max_jobs
    check_models(cfg)
    method_options(cfg.protect)
    for name, fixed in cfg.attacks.params.items():
        if name not in attack_names():
            raise BenchError(f"attacks.params.{name}: unknown attack; registered: {', '.join(attack_names())}")
        try:
            get_attack(name).check_params(fixed)
        except AttackError as err:
            raise BenchError(f"attacks.params.{name}: {err}") from None
    counts = count_jobs(cfg, attack_names(), weight_free_attacks())
    total = sum(counts.values())
    if total > max_jobs:
        kinds = ", ".join(f"{kind} {n:,}" for kind, n in counts.items())
        raise BenchError(f"the config plans {total:,} jobs ({kinds}), more than the limit of {max_jobs:,}; narrow "
                         "the grid, or raise the limit (advparams sweep --max-jobs N)")
    return counts


def plan_for(cfg: SweepConfig, max_jobs: int | None = None) -> Plan:
    """The config's plan, once `check_plan` has passed it."""
    check_plan(cfg, max_jobs)
    return make_plan(cfg, attack_names(), weight_free_attacks())


def check_models(cfg: SweepConfig) -> None:
    """Every model name resolves: a registered model, ``torchvision:NAME`` of a torchvision classifier, or
    ``MODULE:FACTORY`` whose module imports and holds a callable ``FACTORY``."""
    for i, ds in enumerate(cfg.datasets):
        for j, m in enumerate(ds.models):
            try:
                _check_model_name(m.name)
            except BenchError as err:
                raise BenchError(f"datasets.{i}.models.{j}.name: {err}") from None


def _check_model_name(name: str) -> None:
    if name.startswith(TORCHVISION_PREFIX):
        import torchvision

        arch = name.removeprefix(TORCHVISION_PREFIX)
        if arch not in torchvision.models.list_models(module=torchvision.models):
            raise BenchError(f"unknown torchvision model {arch!r}; see torchvision.models.list_models() (e.g. resnet18)")
    elif ":" in name:
        module_name, _, factory = name.rpartition(":")
        try:
            module = importlib.import_module(module_name)
        except Exception as err:  # a user's module may fail on import in any way
            raise BenchError(f"model {name!r}: cannot import module {module_name!r}: {first_line(err)}") from None
        if not callable(getattr(module, factory, None)):
            raise BenchError(f"model {name!r}: module {module_name!r} has no callable {factory!r}")
    elif name not in MODELS:
        raise BenchError(f"unknown model {name!r}; registered: {', '.join(MODELS.names())}; or "
                         f"{TORCHVISION_PREFIX}NAME, or MODULE:FACTORY")
