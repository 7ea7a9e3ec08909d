"""The ``slas`` command line.

Every user error (bad prompt, missing checkpoint, bad option) ends in one
``error: ...`` line and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path


class CLIError(Exception):
    """A user-facing error: printed as one line, exit status 2."""


def _progress(total: int, desc: str):
    from tqdm import tqdm

    bar = tqdm(total=total, desc=desc, unit="img", dynamic_ncols=True, file=sys.stderr)
    return bar, bar.update


def _shapesworld_model(checkpoint: str | None, command: str, ema: bool):
    """The ShapesWorld backbone of `slas sample` / `slas toyworld eval` (``slas.apps.eval.load_model``); a run's
    weights are named on stdout."""
    from slas.apps.eval import load_model

    model = load_model(checkpoint, ema=ema, shapesworld_only=command)
    if model.from_run:
        print(f"weights: {model.description}")
    return model.backbone


def _read_prompts(args) -> list[dict]:
    """ShapesWorld metadata of ``--prompt`` (repeatable) and ``--prompts-file`` (slas.recipe.prompts.load_prompts)."""
    from slas.recipe.prompts import load_prompts
    from slas.toyworld import parse

    metas = [parse(p) for p in args.prompt or []]  # fails fast, naming the bad word
    if args.prompts_file is not None:  # an empty file (or path) is an error of its own, not a missing option
        try:
            metas += [parse(r["prompt"]) for r in load_prompts(args.prompts_file, parse)]  # the grammar's metadata
        except (ValueError, FileNotFoundError) as e:
            raise CLIError(str(e)) from None
    if not metas:
        raise CLIError("give --prompt TEXT (repeatable) or --prompts-file FILE")
    return metas


def cmd_sample(args) -> None:
    from PIL import Image

    from slas.evals.stats import format_proportion
    from slas.policy.generate import generate
    from slas.toyworld import verify
    from slas.toyworld.evaluate import labelled_grid, verdict_record

    if args.n < 1:
        raise CLIError(f"-n must be >= 1, got {args.n}")
    metas = prompts = _read_prompts(args)
    model = _shapesworld_model(args.checkpoint, "sample", ema=not args.no_ema)
    plist = [m["prompt"] for m in metas for _ in range(args.n)]
    seeds = [args.seed + i for i in range(len(plist))]
    bar, upd = _progress(len(plist), "sampling")
    images = generate(model, plist, seeds, steps=args.steps, progress=upd)
    bar.close()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    img_dir = out.with_suffix("")
    img_dir.mkdir(parents=True, exist_ok=True)
    metas_n = [m for m in metas for _ in range(args.n)]
    results = [verify(img, m) for img, m in zip(images, metas_n, strict=True)]
    verdicts = []  # one line per image: its file, prompt, seed and strict verdict with the reasons
    for i, (img, m, r) in enumerate(zip(images, metas_n, results, strict=True)):
        Image.fromarray(img).save(img_dir / f"{i:04d}.png")
        verdicts.append(json.dumps(verdict_record(m, r, image=f"{i:04d}.png", seed=seeds[i])) + "\n")
    (img_dir / "verdicts.jsonl").write_text("".join(verdicts))
    ncol = args.n if len(prompts) > 1 else min(args.n, 8)
    Image.fromarray(labelled_grid(images, metas_n, results, ncol=ncol)).save(out)  # prompt + pass/fail per image
    correct = sum(r.correct for r in results) / len(results)
    print(f"wrote {out} and {len(images)} images in {img_dir}/ (verdicts.jsonl); strict verifier: "
          f"{format_proportion(correct, len(results))} correct")


def cmd_eval(args) -> None:
    from slas.toyworld import split, verify
    from slas.toyworld.evaluate import balanced_subset, evaluate_shapesworld, format_table, labelled_grid, plan

    if args.n_per_prompt < 1 or args.images_per_tag < 0 or args.max_prompts < 0:
        raise CLIError(f"--n-per-prompt must be >= 1, --images-per-tag and --max-prompts >= 0, got "
                       f"{args.n_per_prompt}, {args.images_per_tag}, {args.max_prompts}")
    entries = balanced_subset(split(args.split), args.max_prompts)
    model = _shapesworld_model(args.checkpoint, "toyworld eval", ema=not getattr(args, "no_ema", False))
    total = len(plan(entries, args.n_per_prompt, args.images_per_tag)[0])
    bar, upd = _progress(total, f"eval[{args.split}]")
    t0 = time.time()
    summary, images, metas = evaluate_shapesworld(model, entries, args.n_per_prompt, steps=args.steps, progress=upd,
                                                  images_per_tag=args.images_per_tag)
    bar.close()
    summary["split"], summary["n_per_prompt"], summary["steps"] = args.split, args.n_per_prompt, args.steps
    summary["wall_time_s"] = round(time.time() - t0, 1)
    print(format_table(summary))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(summary, indent=2) + "\n")
        print(f"wrote {args.json}")
    if args.grid:
        from PIL import Image

        shown, shown_metas = images[: args.grid_n], metas[: args.grid_n]
        results = [verify(img, m) for img, m in zip(shown, shown_metas, strict=True)]
        Image.fromarray(labelled_grid(shown, shown_metas, results)).save(args.grid)  # prompt + pass/fail per image
        print(f"wrote {args.grid}")


def key_values(items: list[str] | None, flag: str, example: str) -> dict:
    """``--flag KEY=VALUE`` (repeatable) -> {KEY: VALUE parsed as YAML}; a malformed item is a CLIError."""
    import yaml

    options: dict = {}
    for item in items or []:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise CLIError(f"{flag} {item!r} must look like KEY=VALUE, e.g. {flag} {example}")
        try:
            options[key.strip()] = yaml.safe_load(raw)
        except yaml.YAMLError as e:
            raise CLIError(f"{flag} {item!r}: the value is not valid YAML ({str(e).splitlines()[0]})") from None
    return options


def _eval_options(args, model: str | None, out: Path):
    from slas.apps.eval import EvalOptions

    options = key_values(args.reward_option, "--reward-option", "model_path=/ckpt/pick")
    return EvalOptions(
        suite=args.suite, out=out, model=model, images=Path(args.images) if args.images else None, split=args.split,
        prompts=Path(args.prompts) if args.prompts else None, max_prompts=args.max_prompts,
        n_per_prompt=args.n_per_prompt, images_per_tag=args.images_per_tag, steps=args.steps,
        batch_size=args.batch_size, shift=args.shift, resolution=args.resolution, ema=not args.no_ema,
        save_images=not args.no_images, detector=args.detector,
        detector_path=args.detector_path, clip_path=args.clip_path, device=args.device, reward=args.reward,
        reward_options=options, unigenbench_split=args.unigenbench_split, data_dir=args.data_dir,
        judge_concurrency=args.judge_concurrency, overwrite=args.overwrite,
    )


def _progress_bar(total: int, desc: str):
    return _progress(total, desc)[0]


def cmd_evaluate(args) -> None:
    """`slas eval`: one suite on one model (or on existing images), or --compare two results."""
    from slas.evals.unigenbench import JudgeError

    try:
        _evaluate(args)
    except (JudgeError, OSError) as e:  # a judge refusing every request, a model directory transformers cannot read
        raise CLIError(str(e)) from None


def _evaluate(args) -> None:
    from slas.apps import eval as harness

    if args.compare:
        if args.model or args.images:
            raise CLIError("--compare takes two result directories, or two models with --suite and --out; "
                           "drop --model/--images")
        sides = []
        for label, spec in zip("AB", args.compare, strict=True):
            if (Path(spec) / harness.SUMMARY_FILE).is_file():
                sides.append(Path(spec))
                continue
            if not args.suite or not args.out:
                raise CLIError(f"--compare {spec}: not a `slas eval` output directory (no {harness.SUMMARY_FILE}); to "
                               "evaluate two models first, give --suite and --out")
            out = Path(args.out) / label
            print(harness.format_summary(harness.run_suite(_eval_options(args, spec, out), progress=_progress_bar)))
            print(f"wrote {out}/ ({label} = {spec})\n")
            sides.append(out)
        cmp = harness.compare_results(sides[0], sides[1], n_boot=args.n_boot)
        print(harness.format_compare(cmp))
        if args.out:
            Path(args.out).mkdir(parents=True, exist_ok=True)
            (Path(args.out) / "compare.json").write_text(json.dumps(cmp, indent=2) + "\n")
            print(f"wrote {Path(args.out) / 'compare.json'}")
        return
    if not args.suite or not args.out:
        raise CLIError("give --suite SUITE and --out DIR (or --compare A B)")
    summary = harness.run_suite(_eval_options(args, args.model, Path(args.out)), progress=_progress_bar)
    print(harness.format_summary(summary))
    print(f"wrote {args.out}/ ({harness.RESULTS_FILE}, {harness.SUMMARY_FILE}"
          f"{', ' + harness.IMAGES_DIR + '/' if not args.no_images and not args.images else ''})")


def cmd_pretrain(args) -> None:
    from slas.toyworld.pretrain import pretrain

    out = args.out or f"runs/pretrain_{args.size}"
    pretrain(out, size=args.size, steps=args.steps, lr=args.lr, seed=args.seed)


CONFIGS = Path(__file__).resolve().parents[3] / "configs"  # the shipped configs (a source checkout)


def config_path(arg: str | None) -> str | None:
    """``--config``: a YAML path, or the name of a shipped config (``toy_slas`` = configs/toy_slas.yaml), from any
    working directory."""
    if arg is None or Path(arg).is_file():
        return arg
    for cand in (CONFIGS / arg, CONFIGS / f"{arg}.yaml", CONFIGS / Path(arg).name):
        if cand.is_file():
            return str(cand)
    shipped = sorted(p.stem for p in CONFIGS.glob("*.yaml")) if CONFIGS.is_dir() else []
    raise CLIError(f"--config {arg}: no such file, and no shipped config of that name (shipped: {', '.join(shipped)})")


def cmd_config(args) -> None:
    """`slas config show` (the resolved config, each field with its documentation) / `slas config check F`."""
    from slas.config import describe, load_config

    if args.action == "check":
        for f in args.files:
            load_config(config_path(f))
            print(f"{f}: ok")
        return
    print(describe(load_config(config_path(args.config), args.overrides)), end="")


def cmd_train(args) -> None:
    from slas.config import load_config
    from slas.recipe.run_dir import RunDir
    from slas.recipe.train import train

    if args.resume:
        paths = RunDir(args.resume)
        run = paths.root
        if not paths.is_run():
            raise CLIError(f"--resume {run}: no {paths.config.name} there; is it a run directory of `slas train`?")
        if args.config:
            raise CLIError("--resume continues a run with its own config.yaml; drop --config")
        extra = [o for o in args.overrides if o.partition("=")[0].strip() != "train.iterations"]
        if extra:
            raise CLIError(f"--resume continues a run with its own config.yaml; the one override it takes is "
                           f"train.iterations=N (to extend the run): drop {' '.join(extra)}")
        cfg = load_config(paths.config, [f"run.out_dir={run}", *args.overrides])
        _extend(run, load_config(paths.config, [f"run.out_dir={run}"]), cfg)
    else:
        cfg = load_config(config_path(args.config), args.overrides)
    train(cfg, resume=bool(args.resume), progress=not args.no_progress)


def _extend(run: Path, before, after) -> None:
    """`slas train --resume RUN train.iterations=N`: N must exceed the run's own count; says what changes."""
    from slas.recipe.builders import lr_lambda
    from slas.recipe.checkpoint import read_state
    from slas.recipe.run_dir import RunDir

    n0, n = before.train.iterations, after.train.iterations
    if n == n0:
        return
    if n < n0:
        raise CLIError(f"train.iterations={n} with --resume must be larger than the run's own {n0}: --resume extends a "
                       "run, it does not shorten one")
    msg = f"extending {run} from {n0} to {n} iterations"
    if after.train.lr_schedule == "cosine":  # the schedule's length is train.iterations: its remainder changes
        ckpt = RunDir(run).latest()
        step = (read_state(ckpt)["iteration"] if ckpt else 0) * after.train.updates_per_iter
        lr0, lr1 = after.train.lr * lr_lambda(before)(step), after.train.lr * lr_lambda(after)(step + 1)
        msg += (f"; its cosine LR schedule now spans {n} iterations, so the remaining updates follow that schedule "
                f"(LR {lr0:.3g} now, {lr1:.3g} at the next update): the result differs from a run of {n} iterations "
                "from the start")
    print(msg)


def cmd_compare(args) -> None:
    """`slas compare`: methods x seeds (x sweep values) as separate training processes; results with 95% CIs."""
    from slas.apps.compare import compare, parse_seeds, parse_sweep

    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    if not methods:
        raise CLIError("--methods must name at least one estimator, e.g. --methods slas,grpo")
    command = "slas " + " ".join(shlex.quote(a) for a in args.argv)
    res = compare(config_path(args.config), methods, parse_seeds(args.seeds), args.out,
                  [parse_sweep(s) for s in args.sweep or []],
                  args.overrides, jobs=args.jobs, threads=args.threads, gold_target=args.gold_target, command=command)
    print(Path(args.out, "summary.md").read_text())
    if res.failed:
        raise CLIError(f"{len(res.failed)} run(s) did not finish: {', '.join(res.failed)} (logs in {args.out}/logs/); "
                       "run the same command again to resume them")


def cmd_pref(args) -> None:
    from slas.toyworld.pref_train import train_pref

    train_pref(args.out, checkpoint=args.checkpoint, seed=args.seed)


def cmd_export(args) -> None:
    """Write a run's trained weights in a format stock diffusers pipelines load."""
    from slas.policy import adapter_class
    from slas.recipe.run_dir import latest_checkpoint, load_run

    run, out = Path(args.run_dir), Path(args.out)
    latest_checkpoint(run)  # a run with a checkpoint, before anything else
    if out.exists() and any(out.iterdir()):
        raise CLIError(f"--out {out} is not empty; choose a new directory")

    def exportable(cfg) -> None:
        if not hasattr(adapter_class(cfg.model.backbone), "export"):
            raise CLIError(f"backbone {cfg.model.backbone!r} has no diffusers export; its checkpoints "
                           "(checkpoints/iter_*/model.safetensors) are its format")

    loaded = load_run(run, ema=bool(args.ema), overrides=[f"model.device={args.device}"],
                      check=exportable)
    print(f"weights: {loaded.description}")
    cfg = loaded.cfg
    info = {"run_dir": str(run.resolve()), "checkpoint": loaded.checkpoint.name, "iteration": loaded.iteration,
            "backbone": cfg.model.backbone, "base_model": cfg.model.path, "weights": "ema" if args.ema else "policy"}
    for path in loaded.backbone.export(out, info):
        print(f"wrote {path}")


def cmd_demo(args) -> None:
    """Sample the eval set, verify, and write a grid + per-tag table."""
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    ns = argparse.Namespace(split="eval", n_per_prompt=args.n_per_prompt, images_per_tag=0, max_prompts=0,
                            checkpoint=args.checkpoint,
                            steps=args.steps, json=str(out / "eval.json"), grid=str(out / "grid.png"), grid_n=64)
    cmd_eval(ns)
    print(f"demo outputs in {out}/ (eval.json, grid.png)")


def cmd_reward_server(args) -> None:
    from slas.rewards.server import serve

    options = key_values(args.option, "--option", "processor_path=/ckpt/clip")
    if args.model_path is not None:
        options["model_path"] = args.model_path
    if args.max_bytes < 1 or args.batch_size < 1:
        raise CLIError(f"--max-bytes and --batch-size must be >= 1, got {args.max_bytes} and {args.batch_size}")
    try:
        serve(args.reward, options, args.host, args.port, args.max_bytes, args.batch_size)
    except (ImportError, OSError) as e:  # a missing optional package, a busy port
        raise CLIError(str(e)) from None


def cmd_report(args) -> None:
    from slas.apps.report import write_report

    runs = [Path(p) for p in args.run_dirs]
    out = Path(args.out) if args.out else runs[0] / "report.html" if len(runs) == 1 else Path("report.html")
    print(f"wrote {write_report(runs, out)}")


class _DefaultsFormatter(argparse.HelpFormatter):
    """--help shows each option's default, unless it is None or False or its help already says it."""

    def _get_help_string(self, action):
        text = action.help or ""
        if ("default" not in text and action.default not in (None, False, argparse.SUPPRESS)
                and action.option_strings):
            text += " (default: %(default)s)"
        return text


class _Parser(argparse.ArgumentParser):
    """Sub-command parsers that show each option's default in --help."""

    def __init__(self, *a, **kw):
        kw.setdefault("formatter_class", _DefaultsFormatter)
        super().__init__(*a, **kw)


RUN_OR_CHECKPOINT = ("a run directory of `slas train` (its latest checkpoint: the EMA weights when the run keeps one, "
                     "else the policy's), a ShapesWorld checkpoint directory, or a shipped name (toy_S, toy_M, toy_L; "
                     "default toy_M)")


def build_parser() -> argparse.ArgumentParser:
    from slas.toyworld.evaluate import EVAL_STEPS

    p = argparse.ArgumentParser(prog="slas", description="RL post-training of text-to-image flow models (SLAS).")
    sub = p.add_subparsers(dest="cmd", required=True, parser_class=_Parser)

    s = sub.add_parser("sample", help="sample images for prompts and write a grid")
    s.add_argument("--prompt", action="append", help="a prompt (repeatable)")
    s.add_argument("--prompts-file", help="text file, one prompt per line, or GenEval-style metadata jsonl")
    s.add_argument("-n", type=int, default=8, help="images per prompt")
    s.add_argument("--seed", type=int, default=0, help="sampling seed (the k-th image drawn uses seed + k)")
    s.add_argument("--out", default="grid.png", help="grid PNG; single images go to a folder of the same stem")
    s.add_argument("--checkpoint", help=RUN_OR_CHECKPOINT)
    s.add_argument("--no-ema", action="store_true", help="use a run's raw weights even when it keeps an EMA")
    s.add_argument("--steps", type=int, default=EVAL_STEPS, help="ODE steps")
    s.set_defaults(fn=cmd_sample)

    cf = sub.add_parser("config", help="show the resolved config with each field's documentation, or check files")
    cs = cf.add_subparsers(dest="action", required=True, parser_class=_Parser)
    show = cs.add_parser("show", help="print the resolved config (YAML), each field preceded by its documentation")
    show.add_argument("--config", help="YAML config or a shipped config's name (default: built-in defaults)")
    show.add_argument("overrides", nargs="*", help="dotted overrides, e.g. train.lr=1e-4")
    show.set_defaults(fn=cmd_config)
    chk = cs.add_parser("check", help="validate config files (one error line for the first problem)")
    chk.add_argument("files", nargs="+", metavar="F", help="YAML config files or shipped config names")
    chk.set_defaults(fn=cmd_config)

    t = sub.add_parser("train", help="GRPO post-training (SLAS, DanceGRPO, Dr.GRPO, ...) from a YAML config")
    t.add_argument("--config", help="YAML config, or a shipped config's name such as toy_dancegrpo (default: built-in "
                   "defaults = configs/toy_slas.yaml)")
    t.add_argument("overrides", nargs="*", help="dotted overrides, e.g. train.lr=1e-4 advantage.params.gamma=0.5")
    t.add_argument("--resume", metavar="RUN_DIR", help="continue a run exactly from its last intact checkpoint; "
                   "the one override it takes is train.iterations=N, to extend the run")
    t.add_argument("--no-progress", action="store_true", help="no progress bar (log lines only)")
    t.set_defaults(fn=cmd_train)

    c = sub.add_parser("compare", help="estimators x seeds (x a sweep) of one config, with 95%% CIs, curves and grids",
                       description="Each run is a separate `slas train` process; finished runs are skipped and "
                                   "unfinished ones resumed. Writes results.csv, summary.md, plots/ and grids/ into "
                                   "--out. docs/hacking.md")
    c.add_argument("--config", help="base YAML config (default: built-in defaults = configs/toy_slas.yaml)")
    c.add_argument("--methods", default="slas,grpo,drgrpo,grpo_global_std",
                   help="comma-separated advantage estimators (default: %(default)s)")
    c.add_argument("--seeds", default="3", help="a count (5 = seeds 0..4) or a comma list (default 3)")
    c.add_argument("--out", required=True, help="output directory (run it again with the same arguments to resume)")
    c.add_argument("--sweep", action="append", metavar="KEY=V1,V2,...",
                   help="sweep a config key for the methods that accept it, e.g. advantage.params.gamma=0.25,0.5,1,2 "
                        "(repeatable: the product)")
    c.add_argument("--jobs", type=int, help="runs at once (default: usable cores // --threads, at least 1)")
    c.add_argument("--threads", type=int, default=2, help="torch threads per run (default 2)")
    c.add_argument("--gold-target", type=float, help="in-domain gold accuracy for 'iterations to target' "
                                                     "(default: each run's iteration-0 value + 0.05)")
    c.add_argument("overrides", nargs="*", help="dotted overrides for every run, e.g. train.iterations=30")
    c.set_defaults(fn=cmd_compare)

    x = sub.add_parser("export", help="write a run's weights for stock diffusers pipelines (LoRA or full model)")
    x.add_argument("run_dir", metavar="RUN_DIR", help="run directory of `slas train` (its last checkpoint is exported)")
    x.add_argument("--out", required=True, help="new directory: pytorch_lora_weights.safetensors for "
                   "pipeline.load_lora_weights(OUT), or OUT/transformer (OUT/unet) for a full fine-tune")
    x.add_argument("--ema", action="store_true", help="export the EMA weights instead of the policy's")
    x.add_argument("--device", default="cpu", help="where to load the model for the export (default cpu)")
    x.set_defaults(fn=cmd_export)

    from slas.rewards.server import DEFAULT_MAX_BYTES, DEFAULT_PORT

    r = sub.add_parser("reward-server", help="serve a registered reward over HTTP (the `remote` reward calls it)")
    r.add_argument("--reward", required=True, help="registered reward name, e.g. pickscore, hps, toy_score")
    r.add_argument("--model-path", help="the reward's model_path option (a local checkpoint)")
    r.add_argument("--option", action="append", metavar="KEY=VALUE",
                   help="another option of the reward (repeatable; YAML value), e.g. processor_path=/ckpt/clip")
    r.add_argument("--host", default="127.0.0.1", help="bind address; the server has no authentication")
    r.add_argument("--port", type=int, default=DEFAULT_PORT)
    r.add_argument("--max-bytes", type=int, default=DEFAULT_MAX_BYTES, help="request body limit (413 above it)")
    r.add_argument("--batch-size", type=int, default=256, help="images per reward-model call")
    r.set_defaults(fn=cmd_reward_server)

    rp = sub.add_parser("report", help="one self-contained HTML page of runs: config, curves, sample grids, evals")
    rp.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="run directories of `slas train` (several: overlaid)")
    rp.add_argument("--out", help="HTML file (default RUN_DIR/report.html for one run, else ./report.html)")
    rp.set_defaults(fn=cmd_report)

    from slas.apps.eval import SUITES

    ev = sub.add_parser("eval", help="evaluate a run, a pipeline or the base model on a suite; --compare two results",
                        description="Sample with the deterministic ODE sampler, score, write results.jsonl + "
                                    "summary.json (+ images/) into --out, print a table. docs/evaluation.md")
    ev.add_argument("--suite", choices=SUITES)
    ev.add_argument("--model", metavar="RUN_DIR|PIPELINE_DIR|CKPT_DIR|base",
                    help="a run of `slas train` (latest checkpoint), a ShapesWorld checkpoint, a diffusers pipeline, "
                         "or base (the shipped ShapesWorld model)")
    ev.add_argument("--out", metavar="DIR", help="output directory (one that holds a result is refused unless "
                    "--overwrite)")
    ev.add_argument("--overwrite", action="store_true", help="replace the result already in --out")
    ev.add_argument("--compare", nargs=2, metavar=("A", "B"),
                    help="B versus A with 95%% CIs: two output directories of `slas eval`, or two models (then "
                         "--suite and --out, and both are evaluated into OUT/A and OUT/B)")
    ev.add_argument("--images", metavar="DIR", help="geneval: score existing images in GenEval's folder layout")
    ev.add_argument("--split", choices=["eval", "test", "train"], default="eval", help="ShapesWorld prompt split")
    ev.add_argument("--prompts", metavar="FILE", help="prompts file (text lines or GenEval metadata JSONL)")
    ev.add_argument("--max-prompts", type=int, default=0, help="a fixed tag-balanced subset of this many prompts")
    ev.add_argument("--n-per-prompt", type=int, help="images per prompt (default 1; unigenbench 4)")
    ev.add_argument("--images-per-tag", type=int, default=0, help="images per tag, cycling over its prompts")
    ev.add_argument("--steps", type=int, help=f"ODE steps (default: the run's eval.steps, else {EVAL_STEPS})")
    ev.add_argument("--batch-size", type=int, help="images per sampler forward (default 128 ShapesWorld, 8 diffusers)")
    ev.add_argument("--shift", type=float, help="flow time shift of a diffusers velocity model's ODE (default: the "
                                                "run's sample.shift, or the pipeline scheduler's shift)")
    ev.add_argument("--resolution", type=int, default=0, help="image side of a diffusers pipeline (0 = its default)")
    ev.add_argument("--no-ema", action="store_true", help="use a run's raw weights even when it keeps an EMA")
    ev.add_argument("--no-images", action="store_true", help="do not write the images")
    ev.add_argument("--detector", choices=["shapesworld", "mask2former"],
                    help="geneval detector (default: shapesworld for ShapesWorld models, else mask2former)")
    ev.add_argument("--detector-path", metavar="DIR", help="mask2former: local Mask2Former instance checkpoint")
    ev.add_argument("--clip-path", metavar="DIR", help="mask2former: local CLIPModel for the colour classifier")
    ev.add_argument("--device", default="auto", help="device of a diffusers pipeline and of the detector models")
    ev.add_argument("--reward", help="reward suite: registered reward name")
    ev.add_argument("--reward-option", action="append", metavar="KEY=VALUE", help="reward option (repeatable)")
    ev.add_argument("--unigenbench-split", choices=["short", "long"], default="short")
    ev.add_argument("--data-dir", help="unigenbench data folder (default $SLAS_DATA/unigenbench)")
    ev.add_argument("--judge-concurrency", type=int, default=8)
    ev.add_argument("--n-boot", type=int, default=10_000, help="--compare: bootstrap replicates")
    ev.set_defaults(fn=cmd_evaluate)

    tw = sub.add_parser("toyworld", help="ShapesWorld: eval, pretrain, train-pref, demo").add_subparsers(
        dest="tw", required=True, parser_class=_Parser)
    e = tw.add_parser("eval", help="GenEval-style table on a ShapesWorld split")
    e.add_argument("--n-per-prompt", type=int, default=1, help="images per prompt")
    e.add_argument("--split", choices=["eval", "test", "train"], default="eval", help="prompt split")
    e.add_argument("--images-per-tag", type=int, default=0,
                   help="sample this many images per tag, cycling over its prompts (for unbalanced splits)")
    e.add_argument("--max-prompts", type=int, default=0,
                   help="a fixed tag-balanced subset of this many prompts (0 = the whole split)")
    e.add_argument("--json", help="also write the numbers to this JSON file")
    e.add_argument("--grid", help="also write a grid PNG of the first samples")
    e.add_argument("--grid-n", type=int, default=64, help="images in the grid")
    e.add_argument("--checkpoint", help=RUN_OR_CHECKPOINT)
    e.add_argument("--no-ema", action="store_true", help="use a run's raw weights even when it keeps an EMA")
    e.add_argument("--steps", type=int, default=EVAL_STEPS, help="ODE steps")
    e.set_defaults(fn=cmd_eval)

    pt = tw.add_parser("pretrain", help="pretrain a ShapesWorld model from scratch (reproducible)")
    pt.add_argument("--size", choices=["S", "M", "L"], default="M", help="model size (S: half M's channels, L: 1.5x)")
    pt.add_argument("--out", help="output checkpoint directory (default runs/pretrain_SIZE); resumes if interrupted")
    pt.add_argument("--steps", type=int, help="override the size's default number of steps")
    pt.add_argument("--lr", type=float, help="override the size's default learning rate (constant after warmup, L's "
                    "halved at step 2000; a resumed run may lower it, e.g. after divergence)")
    pt.add_argument("--seed", type=int, default=0, help="seeds the init and every batch")
    pt.set_defaults(fn=cmd_pretrain)

    tp = tw.add_parser("train-pref", help="train the toy_pref reward model on biased, noisy preference pairs")
    tp.add_argument("--out", required=True, help="output directory (model.safetensors + config.json)")
    tp.add_argument("--checkpoint", help="base model that draws the pairs (default: the shipped toy_M)")
    tp.add_argument("--seed", type=int, default=0, help="seeds the pairs, the label noise and the init")
    tp.set_defaults(fn=cmd_pref)

    d = tw.add_parser("demo", help="sample + evaluate the eval set; write grid and table")
    d.add_argument("--out", default="runs/demo", help="output folder (grid PNG and table)")
    d.add_argument("--n-per-prompt", type=int, default=1, help="images per prompt")
    d.add_argument("--checkpoint", help=RUN_OR_CHECKPOINT)
    d.add_argument("--steps", type=int, default=EVAL_STEPS, help="ODE steps")
    d.set_defaults(fn=cmd_demo)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    from slas.config import ConfigError
    from slas.toyworld.world import PromptError

    try:
        args.fn(args)
    except (CLIError, ConfigError, PromptError, FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as e:
        if getattr(e, "exit_code", None) is not None:  # slas train stopped cleanly and said where it saved
            return e.exit_code
        print("interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
