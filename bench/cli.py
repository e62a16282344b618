"""The `advparams` command: train, evaluate, encrypt, decrypt, attack, sweep, report, ui.

Bad input ends with one line on stderr naming the problem and exit code 2; a refused operation leaves
every model and key file as it was.
"""

from __future__ import annotations

import argparse
import gc
import getpass
import logging
import os
import signal
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.table import Table

from bench.catalog import KINDS
from bench.errors import BenchError
from bench.signals import raising_on
from common.errors import UserError, first_line

if TYPE_CHECKING:
    from bench.sweep.tracking import Tracker

# Tables are wide; when piped (CI logs, files) rich would wrap them at 80 columns.
console = Console(width=None if sys.stdout.isatty() else 200)


# --------------------------------------------------------------------------------------------- options
def _key_value(text: str) -> tuple[str, str]:
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"expected name=value, got {text!r}")
    name, value = text.split("=", 1)
    return name.strip(), value.strip()


def parse_value(text: str) -> Any:
    """A command-line value: int, float, true/false, else the string itself."""
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def _pairs(items: Sequence[tuple[str, str]] | None) -> dict[str, Any]:
    return {k: parse_value(v) for k, v in items or []}


def _add_data_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("data")
    g.add_argument("--data-root", type=Path, help="data set folder (default: $ADVPARAMS_DATA_ROOT, else ~/.cache/advparams/data)")
    g.add_argument("--download", action="store_true", help="let torchvision download a missing data set")
    g.add_argument("--data-path", type=Path, help="folder holding train/ and test/ for the imagefolder data set")


def _data(args: argparse.Namespace):
    from bench.zoo.workflow import DataOptions

    return DataOptions(root=args.data_root, download=args.download, path=args.data_path)


def _add_passphrase_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("key passphrase (never taken from the command line itself)")
    x = g.add_mutually_exclusive_group()
    x.add_argument("--passphrase-env", metavar="VAR", help="read it from environment variable VAR")
    x.add_argument("--passphrase-file", type=Path, metavar="FILE", help="read it from the first line of FILE")
    x.add_argument("--passphrase-prompt", action="store_true", help="ask for it on the terminal")


def _passphrase(args: argparse.Namespace, *, confirm: bool = False, outputs: Sequence[Path] = ()) -> str | None:
    """The key's passphrase, if one is given; a passphrase file is never one of the command's ``outputs``."""
    from bench.zoo.workflow import same_file

    if args.passphrase_env:
        value = os.environ.get(args.passphrase_env, "")
        if not value:
            raise BenchError(f"environment variable {args.passphrase_env} is unset or empty")
        return value
    if args.passphrase_file:
        if not args.passphrase_file.is_file():
            raise BenchError(f"passphrase file not found: {args.passphrase_file}")
        for out in outputs:
            if same_file(out, args.passphrase_file):
                raise BenchError(f"{out} is both the passphrase file and an output; they must be different files")
        lines = args.passphrase_file.read_text().splitlines()
        if not lines or not lines[0]:
            raise BenchError(f"passphrase file {args.passphrase_file} is empty")
        return lines[0]
    if args.passphrase_prompt:
        value = getpass.getpass("Key passphrase: ")
        if not value:
            raise BenchError("empty passphrase")
        if confirm and getpass.getpass("Repeat the passphrase: ") != value:
            raise BenchError("the two passphrases differ")
        return value
    return None


def _add_strict_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--strict", action="store_true",
                   help="refuse a key file that group or others may read (default: warn and go on)")


def _check_key_mode(args: argparse.Namespace) -> None:
    """Warn about a key file that group or others may read (refuse it under --strict)."""
    from protect.keyfile import is_key_file, shared_mode

    mode = shared_mode(args.key) if args.key and is_key_file(args.key) else None  # other files: refused on reading
    if mode is None:
        return
    problem = f"key file {args.key} is open to group/other (mode {mode:04o}); run chmod 600 {args.key}"
    if args.strict:
        raise BenchError(f"{problem} (refused under --strict)")
    print(f"advparams: warning: {problem}", file=sys.stderr)


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.2f}"


def _table(title: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    table = Table(title=title)
    for c in columns:
        table.add_column(c, justify="left" if c == columns[0] or c in ("model", "attack", "state") else "right")
    for r in rows:
        table.add_row(*[str(v) for v in r])
    console.print(table)


# -------------------------------------------------------------------------------------------- commands
def cmd_train(args: argparse.Namespace) -> None:
    from bench.progress import progress_bar
    from bench.sweep.plan import TrainJob
    from bench.zoo.baseline import train_baseline, training_settings
    from bench.zoo.workflow import check_output

    settings = training_settings(epochs=args.epochs, lr=args.lr, optimizer=args.optimizer, batch_size=args.batch_size)
    job = TrainJob(
        dataset=args.dataset,
        dataset_path=str(args.data_path.resolve()) if args.data_path else None,
        model=args.model,
        model_args=_pairs(args.model_arg),
        training=settings.model_dump(),
        seed=args.seed,
    )
    out = args.out or Path("runs/models") / job.file_name()
    if args.out or args.force:  # without either, an existing default file is the cache: read, not written
        check_output(out, "trained model", force=args.force, make_folders=True)
    ds = _data(args).load(args.dataset)
    steps = settings.epochs * -(-len(ds.train) // settings.batch_size)
    with progress_bar(f"training {args.model} on {args.dataset}") as progress:
        done = iter(range(1, steps + 1))
        path, acc = train_baseline(job, ds, out, retrain=args.force, on_batch=lambda *_: progress(next(done), steps))
    console.print(f"test accuracy {_pct(acc)} %  ->  {path}")


def cmd_evaluate(args: argparse.Namespace) -> None:
    from bench.zoo.workflow import evaluate_file

    acc, spec = evaluate_file(args.model_file, data=_data(args), dataset=args.dataset)
    state = spec.extra.get("state", "?")
    console.print(f"{args.model_file}: {spec.model} on {args.dataset or spec.dataset} ({state}): test accuracy {_pct(acc)} %")


def _budget(args: argparse.Namespace):
    """The budget of `advparams encrypt`; the method and its --option values are checked before any data is loaded."""
    import protect

    return protect.Budget(
        max_params=args.max_params,
        eps=args.eps,
        params_per_step=args.params_per_step,
        target_accuracy=args.target_accuracy,
        layers=args.layers,
        stay_in_range=not args.allow_out_of_range,
        seed=args.seed,
        options=protect.check_options(args.method, _pairs(args.option)),
    )


def cmd_encrypt(args: argparse.Namespace) -> None:
    from bench.progress import progress_bar
    from bench.zoo.workflow import encrypt_file

    budget = _budget(args)
    passphrase = _passphrase(args, confirm=True, outputs=(args.out, args.key))
    with progress_bar(f"encrypting ({args.method})") as progress:
        r = encrypt_file(
            args.model_file,
            args.out,
            args.key,
            budget=budget,
            method=args.method,
            data=_data(args),
            split_seed=args.seed,
            owner_count=args.owner_samples,
            passphrase=passphrase,
            force=args.force,
            progress=progress,
        )
    _table(
        f"{args.method} encryption",
        ["clean %", "encrypted %", "drop (points)", "drop (% of clean)", "scalars changed", "share of params %", "seconds"],
        [[_pct(r.acc_clean), _pct(r.acc_encrypted), f"{r.drop_points:.2f}", f"{r.drop_relative:.2f}",
          f"{r.num_changed} / {r.total_params}", f"{100 * r.encrypted_fraction:.6f}", f"{r.seconds:.2f}"]],
    )
    console.print(f"encrypted model -> {args.out}\nkey (fingerprint {r.key_fingerprint[:16]}) -> {args.key}")


def cmd_decrypt(args: argparse.Namespace) -> None:
    from bench.zoo.workflow import decrypt_file

    _check_key_mode(args)
    passphrase = _passphrase(args, outputs=(args.out,))
    acc_enc, acc_dec = decrypt_file(args.model_file, args.key, args.out, data=_data(args), passphrase=passphrase,
                                    force=args.force)
    console.print(
        f"encrypted {_pct(acc_enc)} % -> decrypted {_pct(acc_dec)} %; every tensor restored bit for bit -> {args.out}"
    )


def cmd_attack(args: argparse.Namespace) -> None:
    from attacks import AttackerBudget, attack_names, get_attack
    from bench.progress import progress_bar
    from bench.zoo.workflow import attack_model, check_key_fits, load_for, read_key
    from common.training import accuracy

    names = attack_names() if args.name == "all" else [args.name]
    budget = AttackerBudget(data_fraction=args.data_fraction, trials=args.tune, epochs=args.epochs)
    fixed = {name: _fixed_for(name, _pairs(args.param), len(names) > 1) for name in names}
    for name in names:  # unknown names and bad --param values fail before any data is loaded
        get_attack(name).check_params(fixed[name], budget)
    if args.study and len(names) > 1:
        raise BenchError("--study names one attack's study file; give a single attack name with it")
    _check_key_mode(args)
    key = read_key(args.key, _passphrase(args)) if args.key else None
    model, spec, ds = load_for(args.model_file, _data(args), args.dataset)
    if key is not None:
        check_key_fits(key, model, key_path=args.key, model_file=args.model_file)
    seed = args.seed if args.seed is not None else int(spec.extra.get("owner_seed", 0))
    owner_count = args.owner_samples if args.owner_samples is not None else int(spec.extra.get("owner_samples", 512))
    acc_clean, acc_encrypted = spec.extra.get("clean_accuracy"), accuracy(model, ds.test)  # once, for every attack
    rows, tuned = [], []
    for name in names:
        with progress_bar(f"attack {name}: trials") as progress:
            r = attack_model(name, model, ds, budget=budget, seed=seed, owner_count=owner_count,
                             fixed=fixed[name], key=key,
                             study=args.study, progress=progress)
        rows.append([name, _pct(acc_clean), _pct(acc_encrypted), _pct(r.acc_attacked), _pct(r.val_attacked),
                     f"{r.compute_epochs:.2f}", f"{r.seconds:.1f}", _pct(r.key_precision), _pct(r.key_recall)])
        if r.failed_baseline:
            console.print(f"[yellow]failed baseline[/yellow] {name}: {r.failed_baseline}", highlight=False)
        tuned.append(f"{name}: " + ", ".join(f"{k}={_short(v)}" for k, v in r.best_params.items()))
    _table(
        f"attacks on {args.model_file} ({ds.name}, attacker holds {100 * args.data_fraction:g} % of the training set, "
        f"compute cap {args.epochs} epochs over {args.tune} trials)",
        ["attack", "clean %", "encrypted %", "attacked %", "attacker val %", "compute (epochs)", "seconds",
         "key precision %", "key recall %"],
        rows,
    )
    console.print("tuned parameters:\n  " + "\n  ".join(tuned))


def _fixed_for(name: str, params: dict[str, Any], several: bool) -> dict[str, Any]:
    """The --param values for one attack; with `all`, each attack takes the names it declares."""
    from attacks import get_attack

    if not several:
        return params
    declared = {p.name for p in get_attack(name).params}
    return {k: v for k, v in params.items() if k in declared}


def _short(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def cmd_sweep(args: argparse.Namespace) -> None:
    from bench.sweep.config import load_config
    from bench.sweep.plan import check_plan

    timeout = [f"jobs.connect_timeout={args.connect_timeout}"] if args.connect_timeout is not None else []
    cfg = load_config(args.config, [*(args.set or []), *timeout])  # --connect-timeout: checked as the config key
    counts = check_plan(cfg, args.max_jobs)  # counted, not planned: a grid over the limit is refused in a moment
    if args.dry_run:
        _table(f"{cfg.name}: jobs planned (nothing run)", ["jobs", "count"],
               [*[[k, v] for k, v in counts.items()], ["total", sum(counts.values())]])
        return
    # Imported here, not above: Ray and MLflow take seconds to import, and a dry run needs neither.
    from bench.sweep.driver import print_outcome, run_sweep

    uri = args.tracking_uri or cfg.tracking.uri
    # A scheduler's SIGTERM or a closed terminal's SIGHUP stops the sweep as Ctrl-C does: jobs cancelled, the
    # sweep's run marked KILLED, Ray shut down along its own paths (Python's default would leave it to linger).
    with raising_on((signal.SIGTERM, signal.SIGHUP), KeyboardInterrupt):
        outcome = run_sweep(cfg, address=args.address, tracking_uri=uri, console=Console(stderr=True),
                            local_cpus=args.cpus, max_jobs=args.max_jobs)
    print_outcome(outcome, console)
    if not args.no_report:
        _report(uri, cfg.experiment, args.out, outcome.parent_run_id, cfg.report.tolerance, outcome.tracker)
    if not outcome.ok:
        raise BenchError(f"{len(outcome.failed)} job(s) failed; see the FAILED runs in MLflow, then rerun to retry them")


def _report(uri: str, experiment: str, out: Path | None, sweep_run: str | None = None,
            tolerance: float | None = None, tracker: Tracker | None = None) -> None:
    """The report of ``experiment``, read through ``tracker`` where a sweep has opened the store already."""
    from bench.sweep.report import make_report
    from bench.sweep.tracking import Tracker

    make_report(tracker or Tracker(uri, experiment), experiment, out or Path("reports") / experiment, console,
                sweep_run, tolerance)


def cmd_report(args: argparse.Namespace) -> None:
    from mlflow.tracking import MlflowClient

    from bench.sweep.store import check_uri

    if args.tolerance is not None and not args.tolerance >= 0:
        raise BenchError(f"--tolerance {args.tolerance:g} must be a number of points >= 0")
    check_uri(args.tracking_uri, must_exist=True)
    try:
        experiments = MlflowClient(tracking_uri=args.tracking_uri).search_experiments()
    except Exception as err:  # not an MLflow database, an unreachable server
        raise BenchError(f"cannot read MLflow store {args.tracking_uri}: {first_line(err, 200)}") from None
    experiment = args.experiment
    if experiment is None:
        found = [e for e in experiments if e.name != "Default"]
        if not found:
            raise BenchError(f"no experiment in {args.tracking_uri}; run a sweep first")
        experiment = max(found, key=lambda e: e.creation_time or 0).name
    elif experiment not in {e.name for e in experiments}:
        raise BenchError(f"no experiment named {experiment!r} in {args.tracking_uri}")
    _report(args.tracking_uri, experiment, args.out, tolerance=args.tolerance)


def cmd_ui(args: argparse.Namespace) -> None:
    from bench.sweep.ui import serve

    serve(args.tracking_uri, args.host, args.port, args.experiment, announce=console.print)


def cmd_list(args: argparse.Namespace) -> None:
    import json

    from bench.catalog import catalog

    found = catalog((args.kind,) if args.kind else KINDS)
    if args.json:
        print(json.dumps(found, indent=2, default=str))
        return
    for kind, entries in found.items():
        table = Table(title=f"{kind} ({len(entries)})", show_lines=True)
        for column in ("name", "parameters", "what it is"):
            table.add_column(column, overflow="fold")
        for e in entries:
            params = e.get("options") or e.get("params") or []
            lines = [_param_line(p) for p in params] or [_arguments_line(e.get("arguments"))]
            about = e["summary"] + (f"\n{e['paper']}" if e.get("paper") else "")
            about += "\n(ignores the stolen weights)" if e.get("uses_weights") is False else ""
            about += "\n(needs a path)" if e.get("needs_path") else ""
            table.add_row(e["name"], "\n".join(line for line in lines if line), about)
        console.print(table)
    if not args.kind or args.kind == "models":
        console.print("models also: torchvision:NAME (any torchvision classifier), MODULE:FACTORY (your own)")


def _param_line(p: dict[str, Any]) -> str:
    """``lr=0.01 float [0.0001, 0.5] log: learning rate``"""
    where = ""
    if "range" in p:
        where = f" [{p['range'][0]}, {p['range'][1]}]" + (" log" if p.get("log") else "")
    if "choices" in p:
        where = " {" + ", ".join(map(str, p["choices"])) + "}"
    fixed = "" if p.get("tuned", True) else " (not tuned)"
    return f"{p['name']}={p['default']} {p['kind']}{where}{fixed}: {p['help']}"


def _arguments_line(arguments: dict[str, Any] | None) -> str:
    return ", ".join(f"{k}={v}" for k, v in (arguments or {}).items())


# --------------------------------------------------------------------------------------------- parser
def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="advparams",
        description="Encrypt DNN parameters with AdvParams and measure how well the protection holds.",
    )
    parser.add_argument("--version", action="version", version=f"advparams {_version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("train", help="train a clean baseline model", description="Train a clean baseline model and save it.")
    p.add_argument("--dataset", default="digits", help="a registered data set (see `advparams list`)")
    p.add_argument("--model", default="cnn", help="a registered model (see `advparams list`), torchvision:NAME or MODULE:FACTORY")
    p.add_argument("--model-arg", type=_key_value, action="append", metavar="NAME=VALUE", help="model keyword argument")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--optimizer", default="sgd", help="sgd or adam")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, help="model file to write (default: runs/models/<name>.safetensors)")
    p.add_argument("--force", action="store_true", help="replace --out if it exists (never a key file)")
    _add_data_options(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("evaluate", help="test accuracy of a model file", description="Accuracy of a model file on its data set's test split.")
    p.add_argument("model_file", type=Path)
    p.add_argument("--dataset", help="data set (default: the one named in the model file)")
    _add_data_options(p)
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("encrypt", help="encrypt a model file", description="Encrypt a clean model file; write the encrypted model and its secret key.")
    p.add_argument("model_file", type=Path)
    p.add_argument("--out", type=Path, required=True, help="encrypted model file to write")
    p.add_argument("--key", type=Path, required=True, help="secret key file to write (mode 0600)")
    p.add_argument("--method", default="advparams", help="a registered protection method (see `advparams list`)")
    p.add_argument("--max-params", type=int, default=64, help="most scalars to change")
    p.add_argument("--eps", type=float, default=1.0, help="perturbation size per scalar")
    p.add_argument("--params-per-step", type=int, default=1, help="scalars changed per gradient step")
    p.add_argument("--target-accuracy", type=float, help="stop at this owner-sample accuracy (default: chance)")
    p.add_argument("--layers", nargs="+", metavar="PATTERN", help="only parameters whose names match these patterns")
    p.add_argument("--option", type=_key_value, action="append", metavar="NAME=VALUE",
                   help="an option of the method, e.g. loss=margin for advparams (see `advparams list`)")
    p.add_argument("--allow-out-of-range", action="store_true", help="let perturbed values leave their tensor's range")
    p.add_argument("--owner-samples", type=int, default=512, help="owner's samples used for encryption")
    p.add_argument("--seed", type=int, default=0, help="seed of the owner-sample draw and of the method")
    p.add_argument("--force", action="store_true",
                   help="replace an existing --out or --key (never the model file, nor a key file at --out)")
    _add_passphrase_options(p)
    _add_data_options(p)
    p.set_defaults(func=cmd_encrypt)

    p = sub.add_parser("decrypt", help="decrypt a model file with its key", description="Restore an encrypted model file bit for bit with its key.")
    p.add_argument("model_file", type=Path)
    p.add_argument("--key", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True, help="decrypted model file to write")
    p.add_argument("--force", action="store_true",
                   help="replace --out if it exists (never the encrypted model, its key or any key file)")
    _add_strict_option(p)
    _add_passphrase_options(p)
    _add_data_options(p)
    p.set_defaults(func=cmd_decrypt)

    p = sub.add_parser("attack", help="attack an encrypted model", description="Run one attack, tuned with Optuna on the attacker's validation split; print clean, encrypted and attacked accuracy.")
    p.add_argument("name", help="attack name from the registry, or 'all' for every registered attack")
    p.add_argument("--model-file", type=Path, required=True, help="the encrypted model file")
    p.add_argument("--key", type=Path, help="the model's key, used only to score recovered positions (the attack never "
                   "sees it); refused unless it was made for this model")
    p.add_argument("--dataset", help="data set (default: the one named in the model file)")
    p.add_argument("--data-fraction", type=float, default=0.1, help="share of the training set the attacker holds")
    p.add_argument("--tune", type=int, default=3, metavar="N_TRIALS", help="Optuna trials, sharing the compute cap")
    p.add_argument("--epochs", type=int, default=10, metavar="CAP",
                   help="compute cap of the whole attack, all trials together, in epoch-equivalents: sample-gradients "
                        "over the size of the attacker's training split (validation passes are not counted)")
    p.add_argument("--param", type=_key_value, action="append", metavar="NAME=VALUE", help="fix a parameter instead of tuning it")
    p.add_argument("--owner-samples", type=int, help="owner samples held out of the attacker's share (default: as encrypted)")
    p.add_argument("--seed", type=int, help="seed of the attacker's share and of the attack (default: the encryption's)")
    p.add_argument("--study", type=Path, help="Optuna journal file, so an interrupted study resumes")
    _add_strict_option(p)
    _add_passphrase_options(p)
    _add_data_options(p)
    p.set_defaults(func=cmd_attack)

    p = sub.add_parser("sweep", help="run a sweep config on Ray, tracked in MLflow",
                       description="Run every job of a sweep config not yet finished in its MLflow experiment, then print the report.")
    p.add_argument("config", type=Path, help="YAML config, e.g. configs/quick.yaml")
    p.add_argument("--set", action="append", metavar="PATH=VALUE", help="override a config key, e.g. protect.eps=[0.5,1.0]")
    p.add_argument("--address", help="Ray cluster address (default: $RAY_ADDRESS, else a local Ray on this machine's cores)")
    p.add_argument("--cpus", type=_positive_int, help="CPUs of the local Ray this command starts (default: all of "
                   "this machine's cores); not with --address")
    p.add_argument("--connect-timeout", type=float, metavar="SECONDS",
                   help="how long to wait for the Ray cluster and the tracking server to answer (default: the "
                        "config's jobs.connect_timeout, 30)")
    p.add_argument("--tracking-uri", help="MLflow tracking URI (default: the config's, sqlite:///mlflow.db)")
    p.add_argument("--max-jobs", type=_positive_int, metavar="N",
                   help="refuse a config that plans more than N jobs (default: 20,000)")
    p.add_argument("--dry-run", action="store_true", help="check the config, print the number of jobs of each kind "
                                                          "and stop")
    p.add_argument("--no-report", action="store_true", help="skip the report after the sweep")
    p.add_argument("--out", type=Path, help="report folder (default: reports/EXPERIMENT)")
    p.set_defaults(func=cmd_sweep)

    p = sub.add_parser("report", help="tables and plots of an experiment",
                       description="Print an experiment's tables, write them as CSV and JSON with PNG plots, and log them to its sweep run.")
    p.add_argument("experiment", nargs="?", help="MLflow experiment (default: the newest)")
    p.add_argument("--tracking-uri", default="sqlite:///mlflow.db")
    p.add_argument("--out", type=Path, help="report folder (default: reports/EXPERIMENT)")
    p.add_argument("--tolerance", type=float, metavar="POINTS",
                   help="stolen value a protection may leave and still hold (default: the sweep's report.tolerance)")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("ui", help="start the MLflow UI on the store",
                       description="Start the MLflow UI on a sweep's store, opened on its comparison (the summary "
                                   "runs); SIGTERM or Ctrl-C ends it.")
    p.add_argument("experiment", nargs="?", help="MLflow experiment to open (default: the newest)")
    p.add_argument("--tracking-uri", default="sqlite:///mlflow.db")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=5000)
    p.set_defaults(func=cmd_ui)

    p = sub.add_parser("list", help="what is registered: methods, attacks, data sets, models",
                       description="Every registered protection method, attack, data set and model, with its "
                                   "parameters, defaults, ranges and help.")
    p.add_argument("kind", nargs="?", choices=KINDS, help="show one registry only")
    p.add_argument("--json", action="store_true", help="print plain JSON for scripts")
    p.set_defaults(func=cmd_list)
    return parser


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("advparams")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown"


@contextmanager
def _program_collector() -> Iterator[None]:
    """Python's garbage collector as a program run of a command wants it (never in the process of a caller of
    `main`): each full collection walks every object, and the modules a command loads (torch, Ray, MLflow)
    make over 300,000 that live until the process ends. Full collections are ten times rarer while the
    command runs (young garbage is collected as ever), and none walk them on the way out: at Python's
    defaults, a rerun of the quick sweep spent 0.6 s in the first and 2 s in the last, on 2 cores."""
    young, middle, _ = gc.get_threshold()
    gc.set_threshold(young, middle, 100)  # a full collection at most once per 100 of the middle generation (10)
    try:
        yield
    finally:
        gc.freeze()  # the process ends next; atexit handlers still run


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # MLflow's own chatter ("Creating initial MLflow database tables", artifact download bars) is not the
    # user's business; MLflow sets its loggers up when imported, so it is told before that, and a user's
    # own setting of these variables wins.
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    logging.getLogger("mlflow").setLevel(logging.WARNING)
    # Run as the program (`advparams`, python -m bench.cli), the process is the command's own.
    with _program_collector() if argv is None else nullcontext():
        try:
            args.func(args)
        except UserError as err:
            print(f"advparams: error: {err}", file=sys.stderr)
            return 2
        except KeyboardInterrupt:
            print("advparams: interrupted", file=sys.stderr)
            return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
