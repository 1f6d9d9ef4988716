"""The ``igcorr`` command line: ``demo``, ``run``, ``report``, ``example``, ``benchmark`` and ``evaluate``."""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import inspect
import json
import logging
import pickle
import sys
import tomllib
from pathlib import Path
from typing import Any

from igcorr._files import check_writable
from igcorr._validation import check_choice, check_int, check_number
from igcorr.errors import IgcorrError, InputError, ResultFileError

#: command-line method names → public classes of igcorr
METHODS = {"igc": "IGC", "igac": "IGaC", "ig-moments": "IGMoments", "naive-correlation": "NaiveCorrelation",
           "naive-ttest": "NaiveTTest", "bsc": "BSC"}

#: options of ``igcorr run`` that a config file may set, with their types
RUN_OPTIONS = {"model": str, "weights": str, "data": str, "method": str, "baselines": str, "steps": int,
               "quadrature": str, "tolerance": float, "map_tolerance": float, "max_steps": int, "estimator": str,
               "outputs": str,
               "score": str, "batch_size": int, "seed": int, "regions": str, "mask": str, "permutations": int,
               "bootstrap": int, "checkpoint": str, "checkpoint_every": float, "out": str,
               "model_args": dict, "data_args": dict, "output": str, "attributed": str, "embedding": str,
               "token_input": str, "attention_mask": str, "fixed_ids": str, "token_map": str, "vocab_size": int,
               "baseline_token": int}

#: options of ``igcorr run`` that only make sense with --embedding (token ids attributed in embedding space)
TOKEN_OPTIONS = ("token_input", "attention_mask", "fixed_ids", "token_map", "vocab_size", "baseline_token")

#: options of ``igcorr run`` restricted to a few values (the same lists as the command line's choices)
RUN_CHOICES = {"method": sorted(METHODS) + ["shifted"], "estimator": ["quadrature", "montecarlo"],
               "score": ["output", "softmax", "log_softmax"], "token_map": ["position", "id"]}

#: how the --baselines option reads (also the help text of the option)
BASELINES_HELP = ("'zero' (the default); an integer N such as 8: N dataset draws per sample; 'shared:N': one "
                  "draw of N dataset inputs shared by all samples; any other number such as 0.5, -1 or 8.0: a "
                  "constant baseline with every component equal to it")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="igcorr", description="Dataset-wise attribution of deep networks.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    commands = parser.add_subparsers(dest="command", required=True)

    demo = commands.add_parser("demo", help="train a CNN on the bundled digits and write per-class IGC maps")
    demo.add_argument("--out", default="igcorr-out/demo", help="output folder (default: igcorr-out/demo)")
    demo.add_argument("--epochs", type=int, default=30, help="training epochs (default: 30)")
    demo.add_argument("--steps", type=int, default=32, help="quadrature steps per path (default: 32)")
    demo.add_argument("--baselines", type=int, default=8, help="shared dataset baselines (default: 8)")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--no-progress", action="store_true", help="hide progress bars")

    run = commands.add_parser(
        "run", help="attribute your own model and data",
        description="Build a model and a dataset from your code and run a dataset-wise method on them. Every "
                    "option can also come from a TOML file (--config) with the same names (underscores for "
                    "dashes); command-line options win.")
    run.add_argument("--config", help="TOML file with any of the options below")
    run.add_argument("--model", help="PKG.MODULE:FACTORY returning an nn.Module (or the module object itself)")
    run.add_argument("--model-args", help="keyword arguments of the model factory as a JSON object, e.g. "
                                          "'{\"num_classes\": 10}' (a [model_args] table in the config file)")
    run.add_argument("--weights", help="state_dict file loaded into the model")
    run.add_argument("--data", help="PKG.MODULE:FACTORY returning an (X, Y) pair, a Dataset or a DataLoader")
    run.add_argument("--data-args", help="keyword arguments of the data factory as a JSON object "
                                         "(a [data_args] table in the config file)")
    run.add_argument("--output", help="the attributed part of what the model returns: a key or attribute name "
                                      "(e.g. logits) or a tuple position")
    run.add_argument("--attributed", help="samples that are dicts or tuples of inputs: comma-separated names of "
                                          "the attributed inputs; the others go to the model unattributed")
    run.add_argument("--embedding", help="attribute token ids in the output space of this embedding module (a "
                                         "name from model.named_modules(), e.g. bert.embeddings.word_embeddings)")
    run.add_argument("--token-input", help="with --embedding: the name of the token ids among the samples' inputs "
                                           "(default input_ids)")
    run.add_argument("--attention-mask", help="with --embedding: the 0/1 input marking real tokens; padding is held "
                                              "at the input and gets no attribution")
    run.add_argument("--fixed-ids", help="with --embedding: comma-separated token ids held at the input, e.g. the "
                                         "[CLS] and [SEP] ids")
    run.add_argument("--token-map", choices=["position", "id"],
                     help="with --embedding: one value per position (default) or per token id (also writes "
                          "tokens.png and tokens.md with the top tokens and their counts)")
    run.add_argument("--vocab-size", type=int, help="with --token-map id: number of token ids (default: read from "
                                                    "the embedding module)")
    run.add_argument("--baseline-token", type=int, help="with --embedding: the baseline is this token at every "
                                                        "position, embedded (e.g. the padding id)")
    run.add_argument("--method", choices=sorted(METHODS), help="dataset-wise method (default: igc)")
    run.add_argument("--baselines", help=BASELINES_HELP)
    run.add_argument("--steps", type=int, help="quadrature nodes per path (start value with --tolerance)")
    run.add_argument("--quadrature", help="trapezoid, riemann_left, riemann_right, riemann_middle, gausslegendre, "
                                          "shifted (shifted grids: an even --steps)")
    run.add_argument("--tolerance", type=float, help="adaptive quadrature: completeness tolerance")
    run.add_argument("--map-tolerance", type=float,
                     help="relative L2 error accepted on the dataset map, e.g. 0.01: igcorr chooses the rule and the "
                          "nodes per path from a pilot on the data and checks the error at the end (instead of "
                          "--steps, --quadrature, --tolerance and --estimator)")
    run.add_argument("--max-steps", type=int, help="adaptive quadrature and --map-tolerance: most nodes per path")
    run.add_argument("--estimator", choices=["quadrature", "montecarlo"])
    run.add_argument("--outputs", help="comma-separated output indices such as 0,2,5 (default: all)")
    run.add_argument("--score", choices=["output", "softmax", "log_softmax"], help="attributed score")
    run.add_argument("--batch-size", type=int)
    run.add_argument("--seed", type=int)
    run.add_argument("--regions", help=".npy mask/stack/label map, .npz of named masks, or a NIfTI label atlas "
                                       "(read at the voxels of --mask; names from <atlas>.tsv): region table")
    run.add_argument("--mask", help="NIfTI brain mask the inputs (voxel vectors) were taken with: the maps and "
                                    "p/q/interval maps are also written as NIfTI images with JSON sidecars, and "
                                    "drawn on glass brains")
    run.add_argument("--permutations", type=int, help="permutation test with this many permutations")
    run.add_argument("--bootstrap", type=int, help="bootstrap intervals with this many replicates")
    run.add_argument("--checkpoint", help="checkpoint file: resume an interrupted run with the same arguments")
    run.add_argument("--checkpoint-every", type=float, help="seconds between checkpoint writes (default 300)")
    run.add_argument("--out", help="output folder (default: igcorr-out/run)")
    run.add_argument("--no-progress", action="store_true", help="hide progress bars")

    example = commands.add_parser("example", help="runnable worked examples on bundled or simulated data")
    example.add_argument("name", choices=["fmri-decoding", "text-classification", "prf-mapping"],
                         help="fmri-decoding: simulated voxels in nilearn's MNI152 mask, a decoder, IGC back onto the "
                              "brain with region p-values and intervals; text-classification: a small BERT on "
                              "generated sentences, IGC per position and per token id (needs the text extra); "
                              "prf-mapping: voxels with known receptive fields, an encoding model (CNN and linear "
                              "readout), pRFs fitted to every voxel's IGC map and to reverse correlation")
    example.add_argument("--out", help="output folder (default igcorr-out/<name>)")
    example.add_argument("--samples", type=int, help="simulated samples (default 900; text-classification: "
                                                     "held-out sentences, default 600)")
    example.add_argument("--voxel-size", type=float, default=4.0, help="voxel size in mm (2 = the bundled mask)")
    example.add_argument("--voxels", type=int, help="prf-mapping: simulated voxels (default 2000)")
    example.add_argument("--epochs", type=int, help="prf-mapping: training epochs of the encoding model")
    example.add_argument("--permutations", type=int, default=500)
    example.add_argument("--bootstrap", type=int, default=200)
    example.add_argument("--seed", type=int, default=0)
    example.add_argument("--no-progress", action="store_true", help="hide progress bars")

    bench = commands.add_parser(
        "benchmark", help="the synthetic 1/f benchmark (experiments A-D): every method, figures and tables",
        description="Run IG mean/std, IGaC, IGC, naive correlation, naive t-test and BSC on the synthetic "
                    "experiments with the statistic as the model (and a trained network with --trained); writes "
                    "one figure, one JSON and one markdown table per experiment. Defaults are CPU-sized; the "
                    "paper used --n 100000.")
    bench.add_argument("--experiment", default="all", help="A, B, C, D, a comma-separated list or all (default)")
    bench.add_argument("--n", type=int, help="evaluation images per experiment (default 2000)")
    bench.add_argument("--steps", type=int, help="trapezoid nodes per IG path (default 16)")
    bench.add_argument("--baselines", type=int, help="dataset baselines drawn per sample (default 8)")
    bench.add_argument("--bsc-baselines", type=int, help="per-sample baselines of BSC (default 1)")
    bench.add_argument("--baseline-draws", type=int, help="experiment B: repeat per-sample vs shared-baseline IGC "
                                                          "for this many draw seeds (default 1)")
    bench.add_argument("--trained", action="store_true", help="also train a network and attribute it with IGC")
    bench.add_argument("--model", choices=["mlp", "convnext"], help="trained network (default mlp; convnext is "
                                                                     "the paper's, slow on a CPU)")
    bench.add_argument("--n-train", type=int, help="training images for --trained (default 10000)")
    bench.add_argument("--epochs", type=int, help="training epochs for --trained (default 10)")
    bench.add_argument("--threads", type=int, help="torch threads (default 1: fastest on a shared CPU)")
    bench.add_argument("--out", default="igcorr-out/benchmark", help="output folder (default igcorr-out/benchmark)")
    bench.add_argument("--figures", help="folder for the figures (default: --out)")
    bench.add_argument("--json", help="also write the combined report of all experiments to this file")
    bench.add_argument("--seed", type=int, default=0)
    bench.add_argument("--no-progress", action="store_true", help="hide progress bars")

    evaluate = commands.add_parser(
        "evaluate", help="are the maps right? faithfulness, sanity and localisation of every method on the "
                         "synthetic benchmark",
        description="Run every dataset-wise method on the synthetic experiments (as igcorr benchmark does) and "
                    "evaluate their maps: deletion and insertion curves of the model's correlation with the targets "
                    "against random rankings, localisation against the known regions, and model-parameter "
                    "randomisation of a small trained MLP. Writes one table (evaluation.csv, evaluation.md), "
                    "evaluation.json and two figures per experiment.")
    evaluate.add_argument("--experiment", default="all", help="A, B, C, D, a comma-separated list or all (default)")
    evaluate.add_argument("--n", type=int, help="evaluation images per experiment (default 1000)")
    evaluate.add_argument("--steps", type=int, help="trapezoid nodes per IG path (default 16)")
    evaluate.add_argument("--baselines", type=int, help="dataset baselines drawn per sample (default 8)")
    evaluate.add_argument("--replacement", choices=["mean", "baseline", "linear"],
                          help="what removed pixels become: the dataset mean (default), the baseline 0, or a noisy "
                               "linear imputation from the kept neighbours (slower)")
    evaluate.add_argument("--fractions", type=int, help="points per curve, evenly spaced from 0 to 1 (default 21)")
    evaluate.add_argument("--random", type=int, help="random rankings of the reference band (default 5)")
    evaluate.add_argument("--order", choices=["signed", "absolute"], help="rank by the signed map (default) or |map|")
    evaluate.add_argument("--no-sanity", action="store_true", help="skip the model-parameter randomisation")
    evaluate.add_argument("--no-independent", action="store_true",
                          help="cascading randomisation only (not each layer alone)")
    evaluate.add_argument("--sanity-samples", type=int, help="images of the sanity check (default 300)")
    evaluate.add_argument("--permutations", type=int,
                          help="label permutations of the trained network's IGC (default 199; 0 for none)")
    evaluate.add_argument("--n-train", type=int, help="training images of the sanity network (default 4000)")
    evaluate.add_argument("--epochs", type=int, help="training epochs of the sanity network (default 5)")
    evaluate.add_argument("--threads", type=int, help="torch threads (default 1: fastest on a shared CPU)")
    evaluate.add_argument("--out", default="igcorr-out/evaluation", help="output folder (default igcorr-out/evaluation)")
    evaluate.add_argument("--figures", help="folder for the figures (default: --out)")
    evaluate.add_argument("--seed", type=int, default=0)
    evaluate.add_argument("--no-progress", action="store_true", help="hide progress bars")

    report = commands.add_parser("report", help="redraw figures and the summary of a saved result")
    report.add_argument("result", help="a result .npz written by igcorr")
    report.add_argument("--out", help="output folder (default: the result's folder)")
    report.add_argument("--regions", help=".npy or .npz regions, or a NIfTI label atlas, for a region table "
                                          "(default: the regions the run tested, with their p-values)")
    return parser


def load_object(spec: str, what: str, arguments: dict[str, Any] | None = None) -> Any:
    """Import ``PKG.MODULE:NAME`` and return the attribute, called (with ``arguments`` as keyword arguments, or
    none) if it is a factory."""
    if not spec or ":" not in spec:
        raise InputError(f"{what} must be given as PKG.MODULE:FACTORY (e.g. mypackage.models:build), got {spec!r}")
    module_name, _, attribute = spec.partition(":")
    if str(Path.cwd()) not in sys.path:
        sys.path.insert(0, str(Path.cwd()))  # let users point at modules in the folder they run from
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise InputError(f"cannot import {module_name!r} for the {what}: {error}") from error
    target: Any = module
    for part in attribute.split("."):
        if not hasattr(target, part):
            raise InputError(f"{module_name} has no attribute {attribute!r} (the {what} factory)")
        target = getattr(target, part)
    import torch

    factory = callable(target) and not isinstance(target, torch.nn.Module) and (inspect.isfunction(target)
                                                                                 or inspect.isclass(target))
    if arguments and not factory:
        raise InputError(f"{spec} is not a function or class, so the {what} arguments {arguments} cannot be "
                         "passed to it")
    if factory:
        arguments = arguments or {}
        try:
            inspect.signature(target).bind(**arguments)
        except TypeError as error:
            raise InputError(f"the {what} factory {spec} does not take the arguments {arguments}: {error}") from error
        except ValueError:
            pass  # no signature to check against (some built-in classes): the call says what is wrong
        target = target(**arguments)
    return target


def parse_arguments(value: Any, where: str) -> dict[str, Any]:
    """Keyword arguments of a factory: a JSON object (the command line) or a table (the config file)."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as error:
            raise InputError(f"{where} must be a JSON object such as '{{\"num_classes\": 10}}': {error}") from error
    if not isinstance(value, dict):
        raise InputError(f"{where} must be a JSON object (a table in the config file) of keyword arguments, got "
                         f"{value!r}")
    return value


def parse_ids(value: Any, where: str) -> list[int]:
    """Token ids from a comma-separated string ('101,102'), a list of integers or one integer."""
    if isinstance(value, str):
        parts = [part.strip() for part in value.split(",") if part.strip()]
        read = [_integer_or_none(part) for part in parts]
        if None in read or not read:
            raise InputError(f"{where} must be comma-separated token ids such as 101,102; got {value!r}")
        return [check_int(i, f"every entry of {where}", minimum=0) for i in read]
    if isinstance(value, list):
        return [check_int(i, f"every entry of {where}", minimum=0, hint="a token id") for i in value]
    return [check_int(value, where, minimum=0, hint="a token id, or a list of them")]


def parse_baselines(text: str | None) -> Any:
    """'zero' → None, 'N' (digits) → N dataset draws per sample, 'shared:N' → one shared draw of N, any other
    number → a constant baseline; InputError for anything else."""
    from igcorr.baselines import FromData

    if text is None or text == "zero":
        return None
    if text.startswith("shared:"):
        count = text.split(":", 1)[1].strip()
        if not count.isdecimal():
            raise InputError(f"--baselines shared:N needs a whole number N of dataset draws, got {text!r}")
        return FromData(int(count), shared=True)
    if text.isdecimal():
        return int(text)
    try:
        return float(text)
    except ValueError as error:
        raise InputError(f"--baselines must be 'zero', N, 'shared:N' or a number, got {text!r}") from error


def _integer_or_none(text: str) -> int | None:
    try:
        return int(text)
    except ValueError:
        return None


def parse_outputs(value: Any, where: str = "--outputs") -> list[int] | None:
    """Output indices from a comma-separated string ('0,2,5'), a list of integers or one integer."""
    if value is None:
        return None
    if isinstance(value, str):
        parts = [part.strip() for part in value.split(",") if part.strip()]
        read = [_integer_or_none(part) for part in parts]
        if None in read:
            raise InputError(f"{where} must be comma-separated output indices such as 0,2,5; "
                             f"{parts[read.index(None)]!r} is not an integer")
        indices = [int(index) for index in read]
    elif isinstance(value, list):
        indices = [check_int(item, f"every entry of {where}", hint="an output index") for item in value]
    else:
        indices = [check_int(value, where, hint="an output index, or a list of them")]
    if not indices:
        raise InputError(f"{where} names no output; give at least one index, or leave it out for all outputs")
    return indices


def config_value(key: str, value: Any, where: str) -> Any:
    """A value of the config file, read as the command line would read it (so ``steps = 16`` and
    ``steps = "16"`` are the same); InputError naming the option for a value of the wrong type."""
    name = f"{key!r} in {where}"
    kind = RUN_OPTIONS[key]
    if key == "outputs":
        return parse_outputs(value, name)
    if kind is dict:
        return parse_arguments(value, name)
    if key == "fixed_ids":
        return parse_ids(value, name)
    if key == "output" and isinstance(value, int) and not isinstance(value, bool):
        return value  # output = 0: a tuple position
    if key == "baselines" and isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)  # baselines = 8 is the same as --baselines 8
    if kind is str:
        if not isinstance(value, str):
            raise InputError(f"{name} must be a string, got {value!r}")
        return check_choice(value, name, RUN_CHOICES[key]) if key in RUN_CHOICES else value
    if isinstance(value, str):
        try:
            value = kind(value.strip())
        except ValueError:
            pass  # refused just below, with the message of the check
    if kind is int:
        return check_int(value, name)
    return check_number(value, name)


def run_options(args: argparse.Namespace) -> dict[str, Any]:
    """Merge the config file and the command line (the command line wins)."""
    options: dict[str, Any] = {}
    if args.config:
        try:
            with open(args.config, "rb") as handle:
                config = tomllib.load(handle)
        except (OSError, tomllib.TOMLDecodeError) as error:
            raise InputError(f"cannot read the config file {args.config}: {error}") from error
        unknown = sorted(set(config) - set(RUN_OPTIONS))
        if unknown:
            raise InputError(f"unknown option(s) {unknown} in {args.config}; known: {sorted(RUN_OPTIONS)}")
        options.update({key: config_value(key, value, args.config) for key, value in config.items()})
    for key in RUN_OPTIONS:
        value = getattr(args, key, None)
        if value is None:
            continue
        if RUN_OPTIONS[key] is dict:  # the command line's keyword arguments update the config file's
            value = {**options.get(key, {}), **parse_arguments(value, f"--{key.replace('_', '-')}")}
        elif key == "fixed_ids":
            value = parse_ids(value, "--fixed-ids")
        options[key] = value
    for required in ("model", "data"):
        if not options.get(required):
            raise InputError(f"igcorr run needs --{required} (or '{required} = ...' in the config file)")
    return options


def run_layout(options: dict[str, Any]) -> Any:
    """The input layout of ``igcorr run`` (None: chosen from the data), from --embedding and the token options
    or --attributed; InputError for options that do not go together."""
    from igcorr.inputs import Embedded, MultipleInputs

    orphans = [f"--{key.replace('_', '-')}" for key in TOKEN_OPTIONS if options.get(key) is not None]
    if options.get("embedding") is None:
        if orphans:
            raise InputError(f"{', '.join(orphans)} need --embedding (the embedding module of the token ids)")
        if options.get("attributed") is None:
            return None
        names = [name.strip() for name in options["attributed"].split(",") if name.strip()]
        return MultipleInputs(attributed=names or None)
    if options.get("attributed") is not None:
        raise InputError("--attributed chooses among float inputs and --embedding attributes token ids: give one")
    if options.get("vocab_size") is not None and options.get("token_map") != "id":
        raise InputError("--vocab-size is the size of the per-id map: it needs --token-map id")
    return Embedded(options["embedding"], input=options.get("token_input"), mask=options.get("attention_mask"),
                    per=options.get("token_map") or "position", vocab_size=options.get("vocab_size"),
                    fixed_ids=options.get("fixed_ids"))


def parse_output(value: Any) -> str | int | None:
    """--output: a key or attribute name, or a position (an integer, or a string of digits)."""
    if value is None or isinstance(value, int):
        return value
    if not isinstance(value, str) or not value.strip():
        raise InputError(f"--output must be a key or attribute name of the model's output, or a position; got "
                         f"{value!r}")
    value = value.strip()
    return int(value) if value.isdecimal() else value


def command_run(args: argparse.Namespace) -> int:
    import igcorr
    import torch

    from igcorr.report import load_regions, write_report

    options = run_options(args)
    layout = run_layout(options)
    output = parse_output(options.get("output"))
    if options.get("baseline_token") is not None and options.get("baselines") is not None:
        raise InputError("give either --baselines or --baseline-token, not both")
    model = load_object(options["model"], "model", options.get("model_args"))
    if options.get("weights"):
        try:
            state = torch.load(options["weights"], map_location="cpu", weights_only=True)
        except (OSError, RuntimeError, ValueError, EOFError, pickle.UnpicklingError) as error:
            detail = ("it is not a state_dict of tensors saved with torch.save"
                      if isinstance(error, pickle.UnpicklingError)
                      else (str(error).strip().splitlines() or [type(error).__name__])[0])
            raise InputError(f"cannot read the weights file {options['weights']}: {detail}") from error
        try:
            model.load_state_dict(state)
        except (RuntimeError, TypeError, AttributeError) as error:
            raise InputError(f"the weights in {options['weights']} do not fit the model: "
                             f"{' '.join(str(error).split())}") from error
    if isinstance(model, torch.nn.Module):
        model.eval()
    data = load_object(options["data"], "data", options.get("data_args"))
    method_name = check_choice(options.get("method", "igc"), "--method", sorted(METHODS))
    method_class = getattr(igcorr, METHODS[method_name], None)
    if method_class is None:
        raise InputError(f"this igcorr has no {METHODS[method_name]} method")
    score = options.get("score")
    settings = {"output": output, "inputs": layout}
    refused = sorted(key for key, value in settings.items()
                     if value is not None and key not in inspect.signature(method_class).parameters)
    if refused:
        flags = {"output": "--output", "inputs": "--embedding/--attributed"}
        raise InputError(f"the {method_name} method does not take {', '.join(flags[key] for key in refused)}")
    method = method_class(model, score=None if score in (None, "output") else score,
                          **{key: value for key, value in settings.items() if value is not None})
    mask = load_mask(options.get("mask"))
    regions = load_regions(options["regions"], mask) if options.get("regions") else None
    if mask is not None or regions is not None:
        check_against_data(data, mask, regions, structured=bool(options.get("embedding") or options.get("attributed")),
                           regions_file=options.get("regions"))
    outputs = parse_outputs(options.get("outputs"))
    baselines = parse_baselines(options.get("baselines")) if "baselines" in options else None
    if options.get("baseline_token") is not None:
        from igcorr.model import named_submodule
        from igcorr.text import ids_shape, token_baseline

        embedding = named_submodule(model, options["embedding"], "embedding module")
        baselines = token_baseline(embedding, ids_shape(data, options.get("token_input")),
                                   options["baseline_token"])
    wanted = {
        "baselines": baselines,
        "n_steps": options.get("steps"), "method": options.get("quadrature"), "tolerance": options.get("tolerance"),
        "map_tolerance": options.get("map_tolerance"), "max_steps": options.get("max_steps"),
        "estimator": options.get("estimator"), "outputs": outputs,
        "batch_size": options.get("batch_size"), "seed": options.get("seed"),
        "permutations": options.get("permutations"), "bootstrap": options.get("bootstrap"),
        "regions": regions if options.get("permutations") or options.get("bootstrap") else None,
        "checkpoint": options.get("checkpoint"), "checkpoint_every": options.get("checkpoint_every"),
    }
    check_writable(options.get("out", "igcorr-out/run"), "results")  # before any compute
    accepted = inspect.signature(method.attribute).parameters
    given = {key: value for key, value in wanted.items() if value is not None}
    refused = sorted(set(given) - set(accepted))
    if refused:
        raise InputError(f"the {method_name} method does not take {refused}; its options: {sorted(accepted)}")
    result = method.attribute(data, progress=not args.no_progress, **given)
    if mask is not None:
        result.metadata["mask"] = str(Path(mask).resolve())
    written = write_report(result, options.get("out", "igcorr-out/run"), regions=regions, mask=mask,
                           mask_name=None if mask is None else Path(mask).name)
    if options.get("token_map") == "id":
        from igcorr.text import write_top_tokens

        written.update(write_top_tokens(result, data, options.get("out", "igcorr-out/run")))
    print(result.summary())
    print("wrote " + ", ".join(str(path) for path in written.values()))
    return 0


def load_mask(path: str | None) -> str | None:
    """The --mask option: the path of a NIfTI brain mask, checked (a 3-D boolean image) before any compute."""
    if path is None:
        return None
    require_optional("nibabel", "nilearn")
    from igcorr.neuro import mask_array

    mask_array(path)
    return str(path)


def check_against_data(data: Any, mask: str | None, regions: Any, structured: bool = False,
                       regions_file: str | None = None) -> None:
    """Refuse, before any compute, a brain mask whose voxel count is not the samples' size, and regions that do
    not fit the samples' shape (for samples that are one tensor)."""
    import torch

    from igcorr.data import DataSource

    raw = DataSource(data, 1).raw_head(1)
    if structured or not isinstance(raw, torch.Tensor):
        if mask is not None:
            raise InputError("--mask needs samples that are one vector of voxel values each")
        return
    if mask is not None:
        from igcorr.neuro import check_voxels

        check_voxels(int(raw[0].numel()), mask, "the samples")
    if regions is not None:
        from igcorr.regions import as_region_masks

        atlas = str(regions_file or "").endswith((".nii", ".nii.gz"))
        if atlas and mask is None and raw.ndim - 1 != 3:
            raise InputError(f"the NIfTI atlas {regions_file} is read at the voxels of a brain mask: give --mask "
                             "(the mask the samples' voxel vectors were taken with)")
        as_region_masks(regions, tuple(raw.shape[1:]))


def command_report(args: argparse.Namespace) -> int:
    import igcorr

    from igcorr.report import load_regions, write_report

    result = igcorr.load(args.result)
    out = args.out or str(Path(args.result).parent)
    check_writable(out, "report")
    # the run's brain mask (recorded by igcorr run --mask) if it is still there: NIfTI maps and glass brains again
    recorded = result.metadata.get("mask")
    mask = load_mask(recorded) if isinstance(recorded, str) and Path(recorded).is_file() else None
    # without --regions, the regions the run tested (if any) are shown, with their p-values and intervals
    written = write_report(result, out, regions=load_regions(args.regions, mask) if args.regions else None,
                           save_result=False, mask=mask, mask_name=None if mask is None else Path(mask).name)
    print("wrote " + ", ".join(str(path) for path in written.values()))
    return 0


#: optional packages that the demo, example and benchmark commands (the igcorr_examples package) import:
#: module name → (what pip installs, the igcorr extra that brings it)
OPTIONAL_PACKAGES = {"sklearn": ("scikit-learn", "examples"), "nilearn": ("nilearn", "neuro"),
                     "nibabel": ("nibabel", "neuro"), "transformers": ("transformers", "text")}


def require_optional(*modules: str) -> None:
    """Raise an InputError naming the extra to install if one of these optional packages is missing.

    The check runs before a command imports ``igcorr_examples``, so a missing package stops the command at once
    (with exit status 2 and one line of error) rather than after minutes of training.
    """
    for module in modules:
        try:
            found = importlib.util.find_spec(module) is not None
        except (ImportError, ValueError):  # a broken or half-removed installation counts as missing
            found = False
        if not found:
            package, extra = OPTIONAL_PACKAGES[module]
            raise InputError(f'this command needs {package}, which is not installed: pip install "igcorr[{extra}]"')


def command_demo(args: argparse.Namespace) -> int:
    require_optional("sklearn")
    from igcorr_examples.digits import run_demo

    report = run_demo(args.out, epochs=args.epochs, n_steps=args.steps, n_baselines=args.baselines, seed=args.seed,
                      progress=not args.no_progress)
    print(f"test accuracy {report['test_accuracy']:.3f}; IGC took {report['igc_seconds']:.1f} s")
    print(f"per-class r:   {' '.join(f'{r:.3f}' for r in report['correlation'])}")
    print(f"per-class Σmap: {' '.join(f'{s:.3f}' for s in report['map_sums'])}")
    print(f"wrote {report['paths']['figure']}, {report['paths']['result']}, {report['paths']['summary']}")
    return 0


def command_example(args: argparse.Namespace) -> int:
    out = args.out or f"igcorr-out/{args.name}"
    if args.name == "text-classification":
        return example_text(args, out)
    if args.name == "prf-mapping":
        return example_prf(args, out)
    require_optional("nilearn", "nibabel")
    from igcorr_examples.fmri import run_fmri_example

    report = run_fmri_example(out, n_samples=args.samples or 900, voxel_size=args.voxel_size,
                              permutations=args.permutations, bootstrap=args.bootstrap, seed=args.seed,
                              progress=not args.no_progress)
    print(f"decoder test r = {report['test_r']:.3f} over {report['n_voxels']} voxels; "
          f"IGC Σ map = {report['map_sum']:.3f}")
    for name, value in report["region_sums"].items():
        print(f"  {name:34s} {value:+.4f}")
    print(f"wrote {out}/ (igc_map.nii.gz, glass_brain.png, regions.png, regions.csv, summary.md)")
    return 0


def example_prf(args: argparse.Namespace, out: str) -> int:
    """``igcorr example prf-mapping``: synthetic voxels with known pRFs, an encoding model, pRFs from IGC."""
    from igcorr_examples.prf import run_prf_example

    flags = {"n_voxels": ("--voxels", args.voxels), "n_test": ("--samples", args.samples),
             "epochs": ("--epochs", args.epochs)}
    options = {name: check_int(value, flag, minimum=2) for name, (flag, value) in flags.items() if value is not None}
    check_writable(out, "example")  # before any compute
    report = run_prf_example(out, seed=args.seed, progress=not args.no_progress,
                             **options)
    igc, reverse = report["recovery"]["igc"], report["recovery"]["reverse_correlation"]
    print(f"{report['n_voxels']} voxels; encoding model held-out r median {report['held_out_r_median']:.3f}")
    print(f"median pRF centre error: IGC {igc['centre_error_median']:.3f} px, reverse correlation "
          f"{reverse['centre_error_median']:.3f} px; size correlation IGC {igc['size_correlation']:.3f}, reverse "
          f"correlation {reverse['size_correlation']:.3f}")
    print(f"took {report['seconds']['total']:.1f} s (IGC {report['seconds']['igc']:.1f} s); wrote {out}/ "
          "(prf_centres.png, prf_fits.png, prf_recovery.png, prf.csv, result.npz, summary.md)")
    return 0


def example_text(args: argparse.Namespace, out: str) -> int:
    """``igcorr example text-classification``: a small BERT on generated sentences, IGC per token id."""
    require_optional("transformers")
    samples = 600 if args.samples is None else check_int(args.samples, "--samples", minimum=2)
    from igcorr_examples.text import run_text_example

    report = run_text_example(out, n_samples=samples, seed=args.seed, progress=not args.no_progress)
    print(f"held-out accuracy {report['test_accuracy']:.3f}; r = {report['correlation']:.3f}; "
          f"Σ map per position {report['map_sum_positions']:.3f}, per id {report['map_sum_ids']:.3f}")
    print("top tokens: " + ", ".join(f"{name} {value:+.3f} (×{count})" for name, _, value, count in report["top"][:6]))
    print("ranks of the deciding ids: " + ", ".join(f"{name} {rank}" for name, rank in report["deciding_ranks"].items()))
    print(f"took {report['seconds']:.1f} s; wrote {out}/ (tokens.png, positions.png, result_ids.npz, "
          "result_positions.npz, summary.md)")
    return 0


def command_benchmark(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from igcorr_examples.synthetic_runner import BenchmarkConfig, run_benchmark

    given = {"n": args.n, "n_steps": args.steps, "baselines": args.baselines, "bsc_baselines": args.bsc_baselines,
             "baseline_draws": args.baseline_draws, "model_kind": args.model, "n_train": args.n_train,
             "epochs": args.epochs, "threads": args.threads}
    config = replace(BenchmarkConfig(), trained=args.trained, seed=args.seed, progress=not args.no_progress,
                     **{key: value for key, value in given.items() if value is not None})

    def show(outcome: Any) -> None:
        report = outcome.report
        print(f"experiment {report['experiment']}: {report['seconds_total']:.1f} s")
        for finding in report["findings"]:
            mark = {True: "yes", False: "NO", None: "--"}[finding["holds"]]
            print(f"  [{mark:>3}] {finding['claim']}: {finding['detail']}")

    combined = run_benchmark(args.experiment, config, out_dir=args.out, json_path=args.json,
                             figures_dir=args.figures, callback=show)
    print(f"total {combined['seconds_total']:.1f} s")
    written = [path for report in combined["experiments"].values() for path in report["files"].values()]
    print("wrote " + ", ".join(written + ([combined["json"]] if "json" in combined else [])))
    return 0


def command_evaluate(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from igcorr_examples.evaluation import EvaluationConfig, run_evaluation
    from igcorr_examples.synthetic_runner import parse_experiments

    given = {"n": args.n, "n_steps": args.steps, "baselines": args.baselines, "replacement": args.replacement,
             "fractions": args.fractions, "random_rankings": args.random, "order": args.order,
             "sanity_samples": args.sanity_samples, "sanity_permutations": args.permutations,
             "n_train": args.n_train, "epochs": args.epochs, "threads": args.threads}
    config = replace(EvaluationConfig(), sanity=not args.no_sanity, independent=not args.no_independent,
                     seed=args.seed, progress=not args.no_progress,
                     **{key: value for key, value in given.items() if value is not None}).validate()
    experiments = parse_experiments(args.experiment)
    check_writable(args.out, "evaluation")  # before any compute
    if args.figures:
        check_writable(args.figures, "figures")

    def show(report: dict[str, Any]) -> None:
        seconds = sum(report["timings"].values())
        r = "; ".join(f"{model} " + "/".join(f"{value:.3f}" for value in values)
                      for model, values in report["original_correlation"].items())
        print(f"experiment {report['experiment']}: {seconds:.1f} s; r on the unmodified images: {r}")
        for row in report["rows"]:
            flag = row.get("model_independent")
            print(f"  {row['model']:9s} {row['method']:24s} deletion AUC {row['deletion_auc']:.3f}  insertion AUC "
                  f"{row['insertion_auc']:.3f}" + ("" if row.get("roc_auc") is None else
                                                   f"  localisation AUC {row['roc_auc']:.3f}")
                  + ("  flagged: the map ignores the model" if flag else ""))

    outcome = run_evaluation(experiments, config, out_dir=args.out, figures_dir=args.figures, callback=show)
    print(f"total {outcome['seconds_total']:.1f} s")
    print("wrote " + ", ".join(outcome["files"].values()))
    return 0


COMMANDS = {"demo": command_demo, "run": command_run, "report": command_report, "example": command_example,
            "benchmark": command_benchmark, "evaluate": command_evaluate}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(message)s")
    try:
        return COMMANDS[args.command](args)
    except IgcorrError as error:  # every error igcorr raises on purpose is one line for the user
        message = " ".join(str(error).splitlines())
        print(f"igcorr {args.command}: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
