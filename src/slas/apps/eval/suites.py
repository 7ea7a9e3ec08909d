"""The ``slas eval`` suites, one class each: ``geneval``, ``toyworld``, ``reward``, ``unigenbench`` (``SUITES``)."""

from __future__ import annotations

import json
import time
from abc import ABC, abstractmethod

import numpy as np

from slas.apps.eval.geneval_folder import read_geneval_folder, write_geneval_folder
from slas.apps.eval.models import Model
from slas.apps.eval.options import EvalError, EvalOptions, Progress
from slas.apps.eval.sampling import sample, sample_for, sampler_name
from slas.evals import geneval
from slas.evals.stats import mean_ci, wilson


def _detector(opts: EvalOptions, shapesworld: bool):
    from slas.evals.detectors import Mask2FormerDetector
    from slas.toyworld.detector import ShapesWorldDetector

    name = opts.detector or ("shapesworld" if shapesworld else "mask2former")
    if name == "shapesworld":
        return ShapesWorldDetector()
    if name != "mask2former":
        raise EvalError(f"--detector must be 'shapesworld' or 'mask2former', got {name!r}")
    if shapesworld:
        raise EvalError("ShapesWorld prompts name circles, squares and triangles, which a COCO detector does not know; "
                        "use --detector shapesworld")
    if not opts.detector_path or not opts.clip_path:
        raise EvalError("--detector mask2former needs --detector-path DIR (a local Mask2Former instance-segmentation "
                        "checkpoint) and --clip-path DIR (a local CLIPModel for the colours)")
    return Mask2FormerDetector(opts.detector_path, opts.clip_path, device=opts.device)


def _geneval_record(image: np.ndarray, meta: dict, detector, filename: str | None) -> dict:
    """One line of upstream's results JSONL (``evaluate_image``'s return value)."""
    r = geneval.evaluate_detections(meta, detector(image, meta), image.shape[:2])
    return {"filename": filename, "tag": r["tag"], "prompt": r["prompt"], "correct": r["correct"],
            "reason": r["reason"], "metadata": r["metadata"], "details": json.dumps(r["details"])}


class Suite(ABC):
    """One ``slas eval --suite``: ``run`` samples (or reads) images and scores them into per-image records and run
    info; ``summarize`` turns them into the suite's scores; ``format`` is the table the CLI prints."""

    name = ""

    @abstractmethod
    def run(self, opts: EvalOptions, model: Model | None, progress: Progress | None) -> tuple[list[dict], dict]:
        """Per-image records and the run's info (settings, timings; ``scores`` for suites that summarise while
        scoring)."""

    def summarize(self, records: list[dict], info: dict) -> dict:
        return info.pop("scores")  # the suite's own summary, computed while scoring

    @abstractmethod
    def format(self, summary: dict) -> str:
        """The table ``slas eval`` prints for ``summary``."""


class GenEvalSuite(Suite):
    """GenEval's rules on detections (slas.evals.geneval): of sampled images, or of an existing image folder."""

    name = "geneval"

    def run(self, opts: EvalOptions, model: Model | None, progress: Progress | None) -> tuple[list[dict], dict]:
        if opts.images is not None:
            items = read_geneval_folder(opts.images)
            shapesworld = opts.detector == "shapesworld"
            detector = _detector(opts, shapesworld)
            t0 = time.perf_counter()
            records = []
            for meta, img, path, k in items:
                rec = _geneval_record(img, meta, detector, path)
                records.append(rec | {"seed": None, "sample": k})
            info = {"model": None, "images": str(opts.images), "score_s": time.perf_counter() - t0}
            return records, info | {"detector": detector.name}
        detector = _detector(opts, model.shapesworld)
        s, info = sample_for(opts, model, progress)
        names = write_geneval_folder(opts.out, s) if opts.save_images else [None] * len(s.metas)
        t0 = time.perf_counter()
        records = [
            _geneval_record(img, meta, detector, name) | {"seed": seed, "sample": k}
            for img, meta, name, seed, k in zip(s.images, s.metas, names, s.seeds, s.sample_ids, strict=True)
        ]
        return records, info | {"detector": detector.name, "score_s": time.perf_counter() - t0}

    def summarize(self, records: list[dict], info: dict) -> dict:
        out = geneval.summarize(records)
        out["per_tag_counts"] = {t: list(c) for t, c in out["per_tag_counts"].items()}
        return out

    def format(self, summary: dict) -> str:
        def ci(p: float, n: int) -> str:
            lo, hi = wilson(p * n, n)
            return f"[{lo:.1%}, {hi:.1%}]"

        lines = [f"{'tag':<15}{'accuracy':>10}  {'95% CI (Wilson)':<17}{'correct':>8}{'n':>6}"]
        for tag, acc in summary["per_tag"].items():
            c, n = summary["per_tag_counts"][tag]
            lines.append(f"{tag:<15}{acc:>10.1%}  {ci(acc, n):<17}{c:>8}{n:>6}")
        n_all = summary["n_images"]
        lines.append(f"{'overall':<15}{summary['overall']:>10.1%}  {ci(summary['overall'], n_all):<17}{'':>8}{n_all:>6}")
        lines.append(f"(overall = mean over tags; images correct {summary['image_accuracy']:.1%}, prompts with a "
                     f"correct image {summary['prompt_accuracy']:.1%}; detector {summary['detector']})")
        return "\n".join(lines)


class ToyWorldSuite(Suite):
    """The ShapesWorld strict verifier (the gold) on a ShapesWorld model's samples."""

    name = "toyworld"

    def run(self, opts: EvalOptions, model: Model, progress: Progress | None) -> tuple[list[dict], dict]:
        from slas.toyworld import verify
        from slas.toyworld.evaluate import summarize as toy_summarize

        if not model.shapesworld:
            raise EvalError("--suite toyworld scores ShapesWorld models only")
        s, info = sample_for(opts, model, progress)
        names = write_geneval_folder(opts.out, s) if opts.save_images else [None] * len(s.metas)
        t0 = time.perf_counter()
        results = [verify(img, m) for img, m in zip(s.images, s.metas, strict=True)]
        records = [
            {"filename": name, "tag": m["tag"], "prompt": m["prompt"], "correct": r.correct,
             "geneval_correct": r.geneval_correct, "score": r.score, "geneval_score": r.geneval_score,
             "exact_count": r.exact_count, "reason": "\n".join(r.reasons), "metadata": json.dumps(m), "seed": seed,
             "sample": k}
            for r, m, name, seed, k in zip(results, s.metas, names, s.seeds, s.sample_ids, strict=True)
        ]
        return records, info | {"score_s": time.perf_counter() - t0, "scores": toy_summarize(results, s.metas)}

    def format(self, summary: dict) -> str:
        from slas.toyworld.evaluate import format_table

        return format_table(summary)


class RewardSuite(Suite):
    """Any registered reward on the samples: its mean with a prompt-clustered 95% interval."""

    name = "reward"

    def run(self, opts: EvalOptions, model: Model, progress: Progress | None) -> tuple[list[dict], dict]:
        from slas import rewards

        if not opts.reward:
            raise EvalError(f"--suite reward needs --reward NAME; registered: {rewards.available()}")
        options = {opts.reward: opts.reward_options} if opts.reward_options else {}
        score = rewards.build({opts.reward: 1.0}, opts.batch_size or 64, options)  # fails on a bad name/option before sampling
        s, info = sample_for(opts, model, progress)
        names = write_geneval_folder(opts.out, s) if opts.save_images else [None] * len(s.metas)
        t0 = time.perf_counter()
        values = score(s.images, [m["prompt"] for m in s.metas], s.metas)[opts.reward]
        if not np.isfinite(values).all():
            raise EvalError(f"reward {opts.reward!r} returned {int((~np.isfinite(values)).sum())} NaN or infinite values")
        records = [
            {"filename": name, "tag": m.get("tag"), "prompt": m["prompt"], "reward": float(v), "metadata": json.dumps(m),
             "seed": seed, "sample": k}
            for v, m, name, seed, k in zip(values, s.metas, names, s.seeds, s.sample_ids, strict=True)
        ]
        return records, info | {"reward": opts.reward, "score_s": time.perf_counter() - t0}

    def summarize(self, records: list[dict], info: dict) -> dict:
        out = mean_ci([r["reward"] for r in records], [r["metadata"] for r in records])
        tags = [r["tag"] for r in records if r["tag"] is not None]
        if len(tags) == len(records):
            out["per_tag"] = {t: float(np.mean([r["reward"] for r in records if r["tag"] == t]))
                              for t in dict.fromkeys(tags)}
        return out

    def format(self, summary: dict) -> str:
        lo, hi = summary["ci95"]
        lines = [f"{'tag':<15}{'mean':>10}"] + [f"{t:<15}{v:>10.4f}" for t, v in summary.get("per_tag", {}).items()]
        lines.append(f"{'overall':<15}{summary['mean']:>10.4f} ± {(hi - lo) / 2:.4f} (95% CI [{lo:.4f}, {hi:.4f}]; "
                     f"{summary['n']} images, {summary['n_clusters']} prompts; reward {summary['reward']})")
        return "\n".join(lines)


class UniGenBenchSuite(Suite):
    """UniGenBench++ (slas.evals.unigenbench): a VLM judge's test points over natural-language prompts."""

    name = "unigenbench"

    def run(self, opts: EvalOptions, model: Model, progress: Progress | None) -> tuple[list[dict], dict]:
        from slas.evals import unigenbench as ugb

        judge = ugb.JudgeConfig.from_env(concurrency=opts.judge_concurrency)  # no judge: a clear error before any work
        if model.shapesworld:
            raise EvalError("--suite unigenbench needs a text-to-image model that reads natural language; a ShapesWorld "
                            "model reads only its own grammar")
        items = ugb.load_items(opts.unigenbench_split, opts.data_dir)
        if opts.max_prompts > 0:
            items = items[: opts.max_prompts]
        entries = [{"prompt": it.prompt, "seed": it.index} for it in items]
        n = opts.n_per_prompt or 4  # upstream generates 4 images per prompt
        steps = opts.steps or model.steps
        s = sample(model, entries, n, 0, steps, opts.batch_size, progress, opts.seed)
        names = write_geneval_folder(opts.out, s) if opts.save_images else [None] * len(s.metas)
        per_item: list[list[np.ndarray]] = [[] for _ in items]
        for img, pid in zip(s.images, s.prompt_ids, strict=True):
            per_item[pid].append(img)
        bar = progress(len(s.images), "judging") if progress else None
        t0 = time.perf_counter()
        res = ugb.score_unigenbench(items, per_item, judge, opts.out / "judge_cache.jsonl", opts.data_dir,
                           progress=bar.update if bar else None)
        if bar:
            bar.close()
        by_key = {(v.index, v.image): v for v in res.verdicts}
        records = []
        for name, seed, pid, k in zip(names, s.seeds, s.prompt_ids, s.sample_ids, strict=True):
            v = by_key[(items[pid].index, k)]
            records.append({"filename": name, "index": items[pid].index, "prompt": items[pid].prompt, "seed": seed,
                            "sample": k, "testpoints": list(items[pid].testpoints), "scores": v.scores,
                            "status": v.status, "detail": v.detail})
        info = {"model": model.description, "unigenbench_split": opts.unigenbench_split, "n_prompts_sampled": len(items),
                "n_per_prompt": n, "steps": steps, "sampler": sampler_name(model), "seed": opts.seed, "sample_s": s.seconds,
                "judge_model": judge.model, "n_requests": res.n_requests, "score_s": time.perf_counter() - t0}
        return records, info | {"scores": res.summary}

    def format(self, summary: dict) -> str:
        lines = [f"{'dimension':<24}{'score':>8}"]
        lines += [f"{k:<24}{v['score'] if isinstance(v, dict) else v:>8.1%}" for k, v in summary["primary"].items()]
        lines.append(f"{'overall':<24}{summary['overall']:>8.1%}")
        lines.append(f"malformed {summary['n_malformed']}, failed {summary['n_failed']} (left out of every score)")
        return "\n".join(lines)


SUITES: dict[str, Suite] = {x.name: x for x in (GenEvalSuite(), ToyWorldSuite(), RewardSuite(), UniGenBenchSuite())}
