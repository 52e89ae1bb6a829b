"""Command-line plumbing shared by every stage: one-line errors, flags from config dataclasses,
signal handling, outputs written whole or not at all, and checkpoints for long runs.

Nothing here knows about models or data; a stage file imports what it needs:
  1. errors and signals: DareuError (bad input: `error: ...`, exit 2), SIGINT/SIGTERM (exit 130/143),
  2. flags: one --flag per config field, its help the field's own comment, checked when built,
  3. outputs: a staging folder moved into place when complete, atomic JSON writers,
  4. checkpoints: <out>.checkpoints/step-NNNNNN/ with every random state, for --resume.
"""
import argparse
import contextlib
import inspect
import json
import math
import os
import pickle
import re
import shlex
import shutil
import signal
import sys
import tempfile
import typing

import torch

# ----------------------------------------------------------------------------------------------
# 1. Errors and signals

MAX_NONFINITE = 3   # non-finite steps in a row that stop a training run (finetune.py, unlearn.py)


class DareuError(Exception):
    """A problem with the user's input: printed as one line, never as a traceback."""


class Interrupted(Exception):
    """SIGINT or SIGTERM stopped a run."""

    def __init__(self, signum):
        super().__init__(signum)
        self.signum = signum


class Signals:
    """SIGINT / SIGTERM handling for the whole run (installed by run_cli). By default a signal raises
    Interrupted at once, so staging folders are cleaned up. Inside `with SIGNALS.deferred():` (a training
    loop) the first signal is only recorded in `received`: the loop finishes its step, writes a checkpoint
    and raises Interrupted itself; a second signal abandons the step at once. `resume` = (checkpoint
    folder, command) lets run_cli say how to continue."""

    def __init__(self):
        self.received, self.defer, self.resume = None, False, None

    def handle(self, signum, frame):
        first = self.received is None
        self.received = signum
        if not (self.defer and first):
            raise Interrupted(signum)

    @contextlib.contextmanager
    def deferred(self):
        self.defer = True
        try:
            yield
        finally:
            self.defer = False
        if self.received:   # it came after the loop's last look
            raise Interrupted(self.received)


SIGNALS = Signals()


def run_cli(main):
    """Run a stage's main(); turn DareuError into `error: ...` on stderr and exit status 2, and a
    SIGINT / SIGTERM into one line saying how to resume and exit status 130 / 143 (128 + signal)."""
    SIGNALS.received, SIGNALS.resume = None, None
    handlers = {s: signal.signal(s, SIGNALS.handle) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        main()
    except DareuError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except Interrupted as e:
        folder, command = SIGNALS.resume or (None, None)
        print(f"interrupted by {signal.Signals(e.signum).name}; "
              + (f"resume with: {command}" if folder and checkpoints(folder) else "no checkpoint to resume from"),
              file=sys.stderr)
        sys.exit(128 + e.signum)
    finally:
        for s, handler in handlers.items():
            signal.signal(s, handler)


# ----------------------------------------------------------------------------------------------
# 2. Flags: a config dataclass documents each field with a one-line comment; that comment is the help

FIELD_COMMENT = re.compile(r"^\s+(\w+)\s*:[^=]*=.*?#\s*(.+)$")


def field_help(config_class):
    """{field: its one-line comment} read from the dataclass's source."""
    return {m.group(1): m.group(2).strip() for line in inspect.getsource(config_class).splitlines()
            if (m := FIELD_COMMENT.match(line))}


def add_config_args(parser, config_class, prefix="", title=None, also=None):
    """One --flag per field of a config dataclass, in an argument group `title`: the default is the
    field's, the help its comment; a bool flag alone means true, or takes true/false. `prefix` names the flags --prefix-field
    (the dest prefix_field); `also` = {field: value} adds "embedded world: value" to the help."""
    group = parser.add_argument_group(title or config_class.__name__)
    helps = field_help(config_class)
    for name, field in config_class.__dataclass_fields__.items():
        kind, dest = flag_type(field), (f"{prefix}_{name}" if prefix else name)
        text = helps.get(name, "").replace("%", "%%")   # argparse formats help with %
        if also and dest in also:
            text += f"; embedded world: {also[dest]}"
        group.add_argument("--" + dest.replace("_", "-"), dest=dest, default=field.default,
                           metavar=kind.__name__.upper(), help=text, type=parse_bool if kind is bool else kind,
                           **(dict(nargs="?", const=True) if kind is bool else {}))
    return group


def flag_type(field):
    """The type a config field's flag parses: its annotation, or X for an optional `X | None` (whose
    None, the default, the config resolves itself)."""
    args = [a for a in typing.get_args(field.type) if a is not type(None)]
    return args[0] if args else field.type


def parse_bool(text):
    if text.lower() not in ("1", "true", "yes", "0", "false", "no"):
        raise argparse.ArgumentTypeError(f"{text!r} is not true or false")
    return text.lower() in ("1", "true", "yes")


def config_from_args(config_class, args, checks, prefix=""):
    """The config from parsed flags, each field checked against `checks` ({field: rule}, check_fields)
    where the flags are parsed; an error names the flag as given (--prefix-field)."""
    cfg = config_class(**{name: getattr(args, f"{prefix}_{name}" if prefix else name)
                          for name in config_class.__dataclass_fields__})
    try:
        check_fields(cfg, **checks)
    except DareuError as e:
        if not prefix:
            raise
        raise DareuError(str(e).replace("--", f"--{prefix.replace('_', '-')}-", 1)) from None
    return cfg


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """--help with every default shown (none for flags without one)."""

    def _get_help_string(self, action):
        return action.help if action.default is None else super()._get_help_string(action)


RULES = {"> 0": lambda v: v > 0, ">= 0": lambda v: v >= 0, ">= 1": lambda v: v >= 1, "<= 0": lambda v: v <= 0,
         "in [0, 1]": lambda v: 0 <= v <= 1, "in [0, 1)": lambda v: 0 <= v < 1,
         "a comma-separated list of names": lambda v: any(name.strip() for name in v.split(","))}


def check_fields(cfg, **rules):
    """Refuse the first field of `cfg` (a config, or parsed flags) that breaks its rule: a key of RULES
    (floats must also be finite), or a collection of the allowed values (a tuple, or a registry dict's
    keys); None (an optional field left to its config) passes."""
    for name, rule in rules.items():
        value, flag = getattr(cfg, name), "--" + name.replace("_", "-")
        if value is None:
            continue
        if not isinstance(rule, str):
            if value not in rule:
                raise DareuError(f"{flag} {value!r}: choose from {', '.join(rule)}")
        elif (isinstance(value, float) and not math.isfinite(value)) or not RULES[rule](value):
            raise DareuError(f"{flag} must be {rule}, not {value!r}")


def check_device(device):
    """Refuse a device this machine does not have."""
    try:
        kind = torch.device(device)
    except RuntimeError:
        raise DareuError(f"--device {device!r} is not a torch device (cpu, cuda, cuda:N, mps)") from None
    if kind.type == "cuda" and (kind.index or 0) >= torch.cuda.device_count():
        raise DareuError(f"--device {device}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    if kind.type == "mps" and not torch.backends.mps.is_available():
        raise DareuError(f"--device {device}: MPS is not available on this machine")
    if kind.type not in ("cpu", "cuda", "mps"):
        raise DareuError(f"--device {device}: only cpu, cuda and mps are supported")


# ----------------------------------------------------------------------------------------------
# 3. Outputs: written whole or not at all

def check_out_path(out, inputs, is_file=False):
    """Refuse an output that is one of the inputs (or holds / sits inside one), or of the other kind
    than what is there already (a file where a folder is written, or a folder where a file is)."""
    if os.path.exists(out) and os.path.isdir(out) == is_file:
        raise DareuError(f"--out {out} is an existing {'folder' if is_file else 'file'}; give a "
                         f"{'file' if is_file else 'folder'} path")
    out_real = os.path.realpath(out)
    for name, path in inputs.items():
        if path and os.path.exists(path):
            p = os.path.realpath(path)
            if out_real == p or p.startswith(out_real + os.sep) or out_real.startswith(p + os.sep):
                raise DareuError(f"--out {out} would overwrite the input {name} {path}; choose another folder")


def staging_dir(out):
    """A fresh folder beside `out`, to fill and then move into place with publish()."""
    parent = os.path.dirname(os.path.abspath(out))
    os.makedirs(parent, exist_ok=True)
    return tempfile.mkdtemp(prefix=f".{os.path.basename(os.path.abspath(out))}.tmp-", dir=parent)


def publish(stage, out):
    """Move a finished staging folder to `out`, replacing an earlier output there."""
    if os.path.exists(out):
        old = stage + ".old"
        os.replace(out, old)
        os.replace(stage, out)
        shutil.rmtree(old)
    else:
        os.replace(stage, out)


def write_json(path, obj):
    """Write JSON atomically (temp file + rename)."""
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=2)
    os.replace(tmp, path)


def write_jsonl(path, records):
    """Write records as JSON Lines atomically (temp file + rename)."""
    with open(f"{path}.tmp", "w", encoding="utf-8") as f:
        f.writelines(json.dumps(r) + "\n" for r in records)
    os.replace(f"{path}.tmp", path)


# ----------------------------------------------------------------------------------------------
# 4. Checkpoints: the resumable state of a long run, in <out>.checkpoints/step-NNNNNN/

def add_resume_arg(parser):
    parser.add_argument("--resume", help="continue an interrupted run from this checkpoint (or the last one in "
                                         "this folder, e.g. OUT.checkpoints), with the same arguments")


def checkpoint_dir(out):
    return os.path.normpath(out) + ".checkpoints"


def checkpoints(folder):
    """The complete checkpoints in `folder`, oldest first."""
    if not folder or not os.path.isdir(folder):
        return []
    return sorted(os.path.join(folder, n) for n in os.listdir(folder)
                  if n.startswith("step-") and os.path.isfile(os.path.join(folder, n, "state.pt")))


def save_checkpoint(folder, step, state, args, keep):
    """Write `state` (tensors, numbers, strings; see load_state) and the run's arguments to
    folder/step-NNNNNN atomically, then delete all but the last `keep` checkpoints. Returns its path."""
    path = os.path.join(folder, f"step-{step:06d}")
    stage = staging_dir(path)
    try:
        torch.save(state, os.path.join(stage, "state.pt"))
        write_json(os.path.join(stage, "args.json"), args)
        publish(stage, path)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    for old in checkpoints(folder)[:-keep]:
        shutil.rmtree(old)
    return path


def resume_from(path, args, may_change):
    """The checkpoint to resume: `path` itself, or the last one in the folder `path`. Refuses a run
    whose arguments differ from the interrupted run's in anything but `may_change`."""
    found = [path] if os.path.isfile(os.path.join(path, "state.pt")) else checkpoints(path)
    if not found:
        raise DareuError(f"--resume {path}: no checkpoint there")
    try:
        with open(os.path.join(found[-1], "args.json"), encoding="utf-8") as f:
            saved = json.load(f)
    except (OSError, ValueError) as e:
        raise DareuError(f"--resume {found[-1]}: unreadable args.json ({e})") from None
    for name, value in args.items():
        if name not in may_change and saved.get(name) != value:
            raise DareuError(f"--resume: --{name.replace('_', '-')} was {saved.get(name)!r} in the interrupted run, "
                             f"not {value!r}; resume with the same arguments")
    return found[-1]


def checkpointing(script, argv, args, may_change):
    """Set up checkpoints for a run writing args.out: returns (checkpoint folder, the checkpoint to resume
    from or None). Checks --resume against the interrupted run's arguments, refuses to start afresh over an
    interrupted run's checkpoints, and tells run_cli how to resume after a signal."""
    folder = checkpoint_dir(args.out)
    resume = resume_from(args.resume, vars(args), may_change) if args.resume else None
    if not resume and checkpoints(folder):
        raise DareuError(f"{folder} holds the checkpoints of an interrupted run: continue it with "
                         f"--resume {folder}, or delete that folder")
    SIGNALS.resume = (folder, resume_command(script, argv, folder))
    return folder, resume


def load_state(checkpoint):
    """A checkpoint's state, loaded with weights_only=True (tensors and plain data only: no code runs)."""
    try:
        return torch.load(os.path.join(checkpoint, "state.pt"), map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, pickle.UnpicklingError) as e:
        raise DareuError(f"cannot load the checkpoint {checkpoint}: {str(e).splitlines()[0]}") from None


def resume_command(script, argv, folder):
    """The command that continues a run: its arguments (from argv or sys.argv) plus --resume folder."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--resume" in argv:
        del argv[argv.index("--resume"):argv.index("--resume") + 2]
    return shlex.join(["python", script, *[a for a in argv if not a.startswith("--resume=")], "--resume", folder])


def rng_state(rng, generator=None):
    """Every random state a run draws from: torch (CPU and CUDA), a random.Random, a torch.Generator."""
    return {"torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "python": rng.getstate(), "generator": generator.get_state() if generator is not None else None}


def set_rng_state(state, rng, generator=None):
    torch.set_rng_state(state["torch"])
    if state["cuda"]:
        torch.cuda.set_rng_state_all(state["cuda"])
    rng.setstate(state["python"])
    if generator is not None:
        generator.set_state(state["generator"])
