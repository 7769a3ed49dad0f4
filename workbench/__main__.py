"""Command line: `python -m workbench COMMAND ...` (or `workbench COMMAND ...`).

    python -m workbench train --preset tiny --train.max_steps 100 --model.depth 8
    python -m workbench train --preset fmnist-small --config run.yaml --print-config
    python -m workbench train --preset tiny --train.out_dir runs/tiny --resume
    python -m workbench sample --checkpoint runs/tiny --num-images 16 --out grid.png --frames frames/
    python -m workbench zoo list      # the model zoo: list, train, eval, export, grids, findings, memorization

Every config field is an option `--section.field VALUE`, generated from the dataclasses in config.py (values are
parsed and validated by the config itself; booleans take true/false). Settings apply in order: --preset, then
--config FILE (a full or partial YAML config), then the options. A new command is a function decorated with
@command(name, help, configure) below; `configure` adds its arguments.
"""

from __future__ import annotations

import argparse
import difflib
import inspect
import json
import re
import sys
import warnings
from collections.abc import Callable
from dataclasses import dataclass, fields
from pathlib import Path

from .cli_checks import (
    MAX_CONFIG_BYTES,
    check_output_folder,
    check_training_paths,
    input_file,
    input_file_or_folder,
    output_file,
    output_folder,
)
from .core.config import ATTENTIONS, MOVED, SAMPLERS, X0_CLIPS, Config
from .core.configio import RenamedSetting, read_yaml
from .core.devices import resolve_device
from .core.presets import PRESETS, preset
from .core.sample_config import PRECISIONS
from .data.codecs import build_codec
from .data.images import save_grid
from .evaluation.during_training import training_fid
from .evaluation.report import EvalRequest
from .sampling.sampler import frame, generate_events, sample_request
from .training.checkpoint import load_for_inference, with_flow_shift, write_text_atomic


class _Parser(argparse.ArgumentParser):
    """Usage errors as one line and exit code 2 (argparse would print the whole, very long, usage first)."""

    def error(self, message: str):
        fix = "" if "Fix:" in message else f". Fix: see {self.prog} --help."  # the path checks name their own
        self.exit(2, f"{self.prog}: error: {message}{fix}\n")


@dataclass(frozen=True)
class Command:
    help: str
    configure: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]


COMMANDS: dict[str, Command] = {}


def command(name: str, help: str, configure: Callable[[argparse.ArgumentParser], None]):
    """Register `run(args) -> exit code` as the subcommand `name`."""

    def register(run: Callable[[argparse.Namespace], int]):
        COMMANDS[name] = Command(help, configure, run)
        return run

    return register


# ---- config options generated from the dataclasses ---------------------------------------------------------------
def _field_comments(cls: type) -> dict[str, str]:
    """The trailing comment of each field in the dataclass source: the config's documentation."""
    found = (re.match(r"\s+(\w+): [^=]+=.*?#\s*(.*)", line) for line in inspect.getsource(cls).splitlines())
    return {m[1]: m[2] for m in found if m}


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    """--preset, --config, --print-config and one --section.field option per config field."""
    parser.add_argument("--preset", choices=list(PRESETS), help="start from this preset (default: Config())")
    parser.add_argument(
        "--config",
        type=input_file("YAML file", MAX_CONFIG_BYTES),
        metavar="FILE",
        help="YAML config applied on top of the preset",
    )
    parser.add_argument("--print-config", action="store_true", help="print the resulting config as YAML and exit")
    parser.add_argument("--name", default=argparse.SUPPRESS, help="experiment name (recorded in checkpoints)")
    defaults = Config()
    for section in fields(Config):
        if section.name == "name":
            continue
        cls, current = type(getattr(defaults, section.name)), getattr(defaults, section.name)
        group = parser.add_argument_group(f"{section.name} options")
        comments = _field_comments(cls)
        for f in fields(cls):
            value = getattr(current, f.name)
            kind = "true/false" if isinstance(value, bool) else type(value).__name__.upper()
            text = f"{comments.get(f.name, '')} (default {value!r})".replace("%", "%%")
            group.add_argument(
                f"--{section.name}.{f.name}",
                dest=f"{section.name}.{f.name}",
                metavar=kind,
                default=argparse.SUPPRESS,
                help=text,
            )
    for old, new in MOVED.items():  # old spellings still read (the config warns, naming the new one)
        parser.add_argument(f"--{old}", dest=old, default=argparse.SUPPRESS, help=f"old spelling of --{new}")


def _dotted(d: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in d.items():
        if isinstance(value, dict):
            out.update(_dotted(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


_FORMAT_WARNING = warnings.formatwarning


def _one_line_warning(message, category, filename, lineno, line=None) -> str:
    """An old config spelling is said in one line (it names the new one); other warnings keep Python's format."""
    if issubclass(category, RenamedSetting):
        return f"warning: {message}\n"
    return _FORMAT_WARNING(message, category, filename, lineno, line)


class UsageError(ValueError):
    """A bad option value or config file: exit code 2 like argparse's own errors."""


def config_from_args(args: argparse.Namespace) -> Config:
    """The preset, then the YAML file, then the --section.field options (raises UsageError naming the field)."""
    try:
        return _config_from_args(args)
    except ValueError as err:
        raise UsageError(str(err)) from None


def _config_from_args(args: argparse.Namespace) -> Config:
    cfg = preset(args.preset) if args.preset else Config()
    if args.config is not None:
        try:  # errors name the file, the line or field, and the fix
            cfg = cfg.override(**_dotted(read_yaml(args.config)))
        except ValueError as err:
            raise ValueError(f"--config {args.config}: {str(err).removeprefix(f'{args.config}: ')}") from None
    overrides = {k: v for k, v in vars(args).items() if "." in k or k == "name"}
    return cfg.override(**overrides) if overrides else cfg


# ---- commands ----------------------------------------------------------------------------------------------------
def _train_arguments(parser: argparse.ArgumentParser) -> None:
    parser.usage = "%(prog)s [--preset NAME] [--config FILE] [--section.field VALUE ...] [--resume] [--print-config]"
    add_config_arguments(parser)
    parser.add_argument("--resume", action="store_true", help="continue from train.out_dir/latest")


@command("train", "train a model (Lightning Fabric; CPU, DDP, GPUs)", _train_arguments)
def run_train(args: argparse.Namespace) -> int:
    cfg = config_from_args(args)
    if args.print_config:
        print(cfg.to_yaml(), end="")
        return 0
    check_training_paths(cfg.data.root, cfg.train.out_dir)  # before training, not at its first save
    from .training.train import train  # Lightning Fabric: a heavy import that only training needs

    summary = train(cfg, resume=args.resume, evaluate_fn=training_fid(cfg))  # FID at eval_every if fid_samples
    if summary["rank"] == 0:
        print(json.dumps(summary, default=str))
    return 130 if summary["status"] == "interrupted" else 0


def _depth_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("depth and schedules (an elastic checkpoint samples any D of its set)")
    group.add_argument("--diffusion-depth", type=int, metavar="D", help="D to sample with (default: the model's)")
    group.add_argument("--depth-schedule", metavar="D1,D2,..", help="one D per block (T values)")
    group.add_argument("--steps-schedule", metavar="S1,S2,..", help="one S per block (T values)")
    group.add_argument(
        "--depth-per-step", metavar="D1,D2,..", help="D values spread over each block's steps, noisiest first"
    )
    group.add_argument(
        "--allow-untrained-depth",
        action="store_true",
        help="sample a D the checkpoint was not trained at (reports label it)",
    )
    parser.add_argument(
        "--cfg-scale",
        type=float,
        metavar="W",
        help="classifier-free guidance scale of a class-conditional model (1 = none; default: the config's)",
    )
    parser.add_argument(
        "--context-noise",
        type=float,
        metavar="C",
        help="later blocks read each finished block "
        "noised, as (1 - C) x + C eps (0 = clean; for models trained with diffusion.context_noise)",
    )
    parser.add_argument(
        "--flow-shift",
        type=float,
        metavar="K",
        help="time shift of a flow model's sampling "
        "schedule, s' = K s / (1 + (K - 1) s): K > 1 spends more steps at high noise (SD3; default: "
        "the config's)",
    )


def _depth_overrides(args: argparse.Namespace) -> dict:
    """The sample-section overrides of the depth (guidance, context noise) arguments given ("4,3,2,1" strings are
    coerced and validated by the config, whose errors name the field and the fix)."""
    given = {
        "diffusion_depth": args.diffusion_depth,
        "depth_schedule": args.depth_schedule,
        "steps_schedule": args.steps_schedule,
        "depth_per_step": args.depth_per_step,
        "allow_untrained_depth": args.allow_untrained_depth or None,
        "cfg_scale": args.cfg_scale,
        "context_noise": args.context_noise,
    }
    return {k: v for k, v in given.items() if v is not None}


ATTENTION_HELP = "attention backend to sample with (default: the checkpoint's model.attention; flex is eager on CPUs)"


def _sample_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--checkpoint",
        required=True,
        type=input_file_or_folder("checkpoint"),
        help="checkpoint file, export or run folder",
    )
    parser.add_argument("--num-images", type=int, help="images to generate (default: the config's sample section)")
    parser.add_argument("--steps", type=int, help="S: denoising steps per block")
    parser.add_argument("--sampler", choices=SAMPLERS, help="default: the config's (flow models take euler, dpm++2m)")
    parser.add_argument("--x0-clip", choices=X0_CLIPS, help="the scheduler's x0 clipping / dynamic thresholding")
    parser.add_argument("--seed", type=int)
    parser.add_argument(
        "--out", type=output_file(".png", ".jpg", ".jpeg"), default="samples.png", help="PNG grid to write"
    )  # checked while parsing, so a path that cannot be written is refused before sampling, not after
    parser.add_argument(
        "--frames", type=output_folder(), metavar="DIR", help="also write one PNG per finished block here"
    )
    parser.add_argument("--no-ema", action="store_true", help="use the trained weights instead of the EMA weights")
    parser.add_argument("--device", default="cpu", type=device_name, help="where to sample: cpu, cuda, cuda:1, mps")
    parser.add_argument("--precision", choices=PRECISIONS, help="the model's evaluations in fp32, or bf16 autocast")
    parser.add_argument("--attention", choices=ATTENTIONS, help=ATTENTION_HELP)
    _depth_arguments(parser)


def device_name(name: str) -> str:
    """argparse type of --device: the name, refused while parsing (before any work) when this machine lacks it."""
    try:
        resolve_device(name)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None
    return name


@command("sample", "generate a PNG grid (and block-by-block frames) from a checkpoint", _sample_arguments)
def run_sample(args: argparse.Namespace) -> int:
    model, cfg = load_for_inference(args.checkpoint, use_ema=not args.no_ema, attention=args.attention)
    cfg = with_flow_shift(cfg, args.flow_shift)  # refuses a shift for a model that is not a flow model
    request = sample_request(
        cfg,
        num_images=args.num_images,
        steps=args.steps,
        sampler=args.sampler,
        seed=args.seed,
        x0_clip=args.x0_clip,
        precision=args.precision,
        **_depth_overrides(args),
    )  # validated: names the field and the fix
    device = resolve_device(args.device)
    model.to(device)
    codec = build_codec(cfg.data, device)
    last = None
    for last in generate_events(model, cfg, request, device=device):
        if last.kind == "block" and args.frames is not None:  # blocks not started yet are hatched, not decoded
            print(save_grid(frame(codec, last), args.frames / f"block-{last.block:02d}.png"))
    print(save_grid(codec.decode(last.x_t), args.out))
    return 0


def _eval_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--checkpoint",
        required=True,
        type=input_file_or_folder("checkpoint"),
        help="checkpoint file, export or run folder",
    )
    parser.add_argument("--num-samples", type=int, default=1000, help="images to generate and score (default 1000)")
    parser.add_argument("--steps", type=int, help="S: denoising steps per block (default: the config's)")
    parser.add_argument("--sampler", choices=SAMPLERS, help="default: the config's")
    parser.add_argument(
        "--x0-clip", choices=X0_CLIPS, help="the scheduler's x0 clipping / dynamic thresholding (default: the config's)"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the initial noise and of the bootstrap")
    parser.add_argument(
        "--extractor",
        choices=("fmnist-classifier", "inception"),
        help="feature network (default: fmnist-classifier for Fashion-MNIST models, else inception)",
    )
    parser.add_argument(
        "--reference",
        type=input_file("reference statistics file"),
        metavar="FILE",
        help="reference statistics: this project's .safetensors (with its .json card) or a published .npz "
        "(pytorch-fid mu/sigma, ADM mu/sigma/arr_0); default: the shipped ones for the model's data",
    )
    parser.add_argument(
        "--save-reference",
        type=output_file(".npz"),
        metavar="FILE.npz",
        help="also write the reference statistics used as .npz (pytorch-fid/ADM layout: mu, sigma)",
    )
    group = parser.add_argument_group(
        "processes (as train: Lightning Fabric; the generated set is the same at any size)"
    )
    group.add_argument("--devices", type=int, default=1, help="processes per node (default 1)")
    group.add_argument("--num-nodes", type=int, default=1, help="nodes (default 1; needs a shared --shard-dir)")
    group.add_argument("--chunk", type=int, default=250, help="images per resumable chunk (default 250)")
    group.add_argument(
        "--shard-dir",
        type=output_folder(),
        metavar="DIR",
        help="features per chunk, for resuming, one subfolder per evaluation (default: eval-shards/ beside the report)",
    )
    copies = parser.add_mutually_exclusive_group()
    copies.add_argument(
        "--memorization",
        type=int,
        nargs="?",
        const=200,
        metavar="N",
        help="nearest-training-neighbour figures and the copy share of N generations (default 200), a grid PNG beside "
        "the report: automatic for models trained on fewer than 100,000 distinct images, this asks for them elsewhere "
        "or for another N (datasets of up to 100,000 training images)",
    )
    copies.add_argument(
        "--no-memorization", action="store_true", help="leave the copy share out, even for a model of a small dataset"
    )
    parser.add_argument("--no-ema", action="store_true", help="score the trained weights instead of the EMA weights")
    parser.add_argument("--no-flop-count", action="store_true", help="skip the measured-FLOPs sampling run")
    parser.add_argument(
        "--device", default="cpu", type=device_name, help="where to sample and score: cpu, cuda, cuda:1, mps"
    )
    parser.add_argument("--attention", choices=ATTENTIONS, help=ATTENTION_HELP)
    parser.add_argument(
        "--out",
        type=output_file(),
        help="JSON report to write (default eval-<checkpoint>-<sampler>-S<steps>"
        "-n<n>-seed<seed>.json in the current folder)",
    )
    _depth_arguments(parser)


@command(
    "eval",
    "FID, KID, precision/recall (IS) of a checkpoint's samples with provenance and cost, as a JSON report",
    _eval_arguments,
)
def run_eval(args: argparse.Namespace) -> int:
    if args.out is None:  # the default report goes to the current folder: refuse before scoring, not after
        check_output_folder(Path.cwd(), "eval's report (no --out given)")
    if args.reference is not None and not args.reference.is_file():
        raise UsageError(
            f"--reference: no such file {args.reference}. Fix: pass a .safetensors file of "
            "data/reference/ or a published .npz (or omit it for the default)."
        )
    from .evaluation import sharded  # launches Lightning Fabric: a heavy import only eval needs

    request = EvalRequest(
        num_samples=args.num_samples,
        steps=args.steps,
        sampler=args.sampler,
        seed=args.seed,
        extractor=args.extractor,
        reference=args.reference,
        use_ema=not args.no_ema,
        measure_flops=not args.no_flop_count,
        x0_clip=args.x0_clip,
        device=args.device,
        attention=args.attention,
        sample=_depth_overrides(args),
        flow_shift=args.flow_shift,
        save_reference=args.save_reference,
        memorization=0 if args.no_memorization else args.memorization,
        memorization_grid=(args.out or Path.cwd() / "eval").with_suffix(".nn.png"),  # renamed with a default --out
    )
    accelerator, _, index = args.device.partition(":")
    devices = [int(index)] if index and args.devices == 1 else args.devices
    shards = args.shard_dir or (args.out.parent if args.out else Path.cwd()) / "eval-shards"  # beside the report
    plan = sharded.ShardPlan(accelerator, devices, args.num_nodes, args.chunk, shards)
    say = lambda message: print(f"eval: {message}", file=sys.stderr, flush=True)  # noqa: E731
    report = sharded.evaluate_sharded(args.checkpoint, request, plan, progress=say)
    if report is None:  # another rank than 0: rank 0 writes the report
        return 0
    report["command"] = "python -m workbench eval " + " ".join(sys.argv[2:] if sys.argv[1:2] == ["eval"] else [])
    out = args.out or Path(
        f"eval-{Path(report['checkpoint']).stem}-{report['sampler']}-S{report['steps']}"
        f"-n{report['n']}-seed{report['seed']}.json"
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    grid = (report.get("memorization") or {}).get("grid")
    if grid and Path(grid) != out.with_suffix(".nn.png"):  # the default --out is named after the report's fields
        report["memorization"]["grid"] = str(Path(grid).replace(out.with_suffix(".nn.png")))
    write_text_atomic(out, json.dumps(report, indent=1) + "\n")
    print(
        json.dumps(
            {
                k: report[k]
                for k in (
                    "fid",
                    "fid_low",
                    "fid_high",
                    "fid_inf",
                    "kid_mean",
                    "precision",
                    "recall",
                    "inception_score",
                    "n",
                    "extractor",
                    "reference",
                    "sampler",
                    "steps",
                    "flow_shift",
                    "x0_clip",
                    "weights",
                    "seed",
                    "pixels_out_of_range",
                    "reference_file",
                    "reference_sha256",
                )
            }
            | {"fid_held_out": report["fid_held_out"]["fid"]}
            | ({"copy_share": report["memorization"]["copy_share"]} if "memorization" in report else {})
        )
    )
    print(f"eval: report written to {out}", file=sys.stderr)
    return 0


def _launch_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--preset", required=True, choices=list(PRESETS), help="the preset to train")
    parser.add_argument("--nodes", type=int, default=1, help="nodes")
    parser.add_argument("--gpus-per-node", type=int, default=8, help="processes per node (one per GPU)")
    parser.add_argument("--strategy", choices=("ddp", "fsdp"), default="fsdp", help="how the processes share work")
    parser.add_argument("--hours", type=int, default=48, help="SLURM time limit")
    parser.add_argument("--accelerator", default="gpu", help="'gpu', or 'cpu' for CPU processes (tests)")
    parser.add_argument("--script", type=output_file(), help="where the SLURM script goes (default runs/launch/...)")
    parser.add_argument("--node-rank", type=int, help="run this node's processes now (else: print and write)")
    parser.add_argument("--master-addr", help="host of node rank 0 (default $MASTER_ADDR)")
    parser.add_argument("--master-port", type=int, default=29500, help="port of node rank 0")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="train options (train.max_steps=10)")


@command("launch", "multi-node training: a SLURM script and the torchrun command, or run one node", _launch_arguments)
def run_launch(args: argparse.Namespace) -> int:
    from .training import launch  # torch.distributed's FSDP modules: only launches need them

    cfg = preset(args.preset)
    nodes, per_node = args.nodes, args.gpus_per_node
    plan = launch.plan_launch(cfg, args.preset, nodes, per_node, args.strategy, args.accelerator, args.hours)
    bad = [kv for kv in args.set if "=" not in kv]
    if bad:
        raise ValueError(f"--set {bad[0]}: not KEY=VALUE. Fix: write e.g. --set train.max_steps=100 model.depth=8.")
    extra = tuple(w for kv in args.set for w in ("--" + kv.split("=", 1)[0], kv.split("=", 1)[1]))
    if args.node_rank is not None:
        return launch.run_node(plan, args.node_rank, args.master_addr, args.master_port, extra)
    script = args.script or Path("runs/launch") / f"{args.preset}-{args.nodes}x{args.gpus_per_node}-{args.strategy}.sh"
    text = launch.slurm_script(plan, extra)
    launch.write_script(text, script)
    print(f"# on every node (NODE_RANK 0..{args.nodes - 1}, MASTER_ADDR = the host of node 0):")
    print(" ".join(launch.torchrun_command(plan, extra=extra)))
    print(f"# SLURM (sbatch {script}):\n{text}", end="")
    return 0


# ---- zoo ---------------------------------------------------------------------------------------------------------
ZOO_ACTIONS = ("list", "train", "eval", "export", "grids", "findings", "memorization", "all")  # zoo.ACTIONS


def _zoo_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=ZOO_ACTIONS, help="what to do with the zoo's members (see its docstring)")
    parser.add_argument("--only", default="", help="comma-separated member names, families or FAMILY/NAME")
    parser.add_argument("--gpu", action="store_true", help="GPU budgets and accelerator")
    parser.add_argument("--readme", action="store_true", help="findings: rewrite the table in docs/results.md")
    parser.add_argument("--fid-every", type=int, default=0, help="train: FID of the EMA weights every K steps")
    parser.add_argument("--fid-samples", type=int, default=0, help="train: images per FID (1,000 if not given)")


@command("zoo", "train, score, draw and export the model zoo (workbench.research.zoo)", _zoo_arguments)
def run_zoo(args: argparse.Namespace) -> int:
    from .research import zoo  # trains through Lightning Fabric: a heavy import that only this command needs

    return zoo.run(args.action, args.only, args.gpu, args.readme, (args.fid_every, args.fid_samples))


# ---- entry -------------------------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    """Parse `argv` (default sys.argv[1:]), run the command, return its exit code (2 for usage errors)."""
    warnings.formatwarning = _one_line_warning
    parser = _Parser(prog="python -m workbench", description=__doc__.split("\n")[0], allow_abbrev=False)
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser, metavar="COMMAND")
    parsers = {
        name: sub.add_parser(name, help=c.help, description=c.help, allow_abbrev=False) for name, c in COMMANDS.items()
    }
    for name, c in COMMANDS.items():
        c.configure(parsers[name])
    args, unknown = parser.parse_known_args(argv)
    own = parsers[args.command]
    if unknown:
        options = [s for a in own._actions for s in a.option_strings]
        near = difflib.get_close_matches(unknown[0], options, n=1)
        own.error(f"unknown option {unknown[0]}" + (f" (did you mean {near[0]}?)" if near else ""))
    try:
        return COMMANDS[args.command].run(args)
    except (ValueError, FileNotFoundError, FloatingPointError) as err:
        if "Fix:" not in str(err):  # the project's own errors name the fix; anything else is a bug: keep the trace
            raise
        print(f"{own.prog}: error: {err}", file=sys.stderr)
        return 2 if isinstance(err, UsageError) else 1


if __name__ == "__main__":
    sys.exit(main())
