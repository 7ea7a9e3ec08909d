"""ShapesWorld as a plugin (slas.plugins): its backbone ``toy``, its rewards, and the world ``shapes`` whose
prompts and evaluation the recipe uses when the config names no prompt files."""

from __future__ import annotations

import json
from pathlib import Path

from slas.plugins import register_world
from slas.policy import register_adapter
from slas.policy.generate import generate, grid
from slas.recipe.run_dir import RunDir
from slas.toyworld import monitor
from slas.toyworld import proxies as _proxies  # noqa: F401  (registers the proxy rewards)
from slas.toyworld import rewards as _rewards  # noqa: F401  (registers the toy_* rewards)
from slas.toyworld.backbone import ToyBackbone
from slas.toyworld.evaluate import balanced_subset, evaluate_shapesworld, labelled_grid, verdict_record
from slas.toyworld.verifier import verify
from slas.toyworld.world import PromptError, parse, split


class ShapesWorld:
    """The world ``shapes``: prompt splits ``train`` / ``test`` / ... (slas.toyworld.world.split) and the strict
    verifier's evaluation."""

    def prompts(self, name: str) -> list[dict]:
        return split(name)

    def evaluate_backbone(self, backbone, cfg, run_dir: Path, iteration: int, *, score_fn, history: list[dict]) -> dict:
        """Held-out ODE evaluation with fixed seeds (eval.split, eval.images_per_tag), the same protocol on train
        prompts (eval.in_domain_per_tag), the proxy-vs-gold monitor, and a sample grid."""
        from PIL import Image

        e = cfg.eval
        entries = balanced_subset(split(e.split), e.max_prompts)
        summary, ev_images, ev_metas = evaluate_shapesworld(backbone, entries, e.n_per_prompt, steps=e.steps,
                                                            images_per_tag=e.images_per_tag)
        prompts = [p for p in e.grid_prompts for _ in range(4)]
        images = generate(backbone, prompts, list(range(len(prompts))), steps=e.steps)
        paths = RunDir(run_dir)
        paths.samples.mkdir(exist_ok=True)
        stem = paths.grid(iteration, "")
        try:  # each image labelled with its prompt and the strict verdict; verdicts in iter_*.jsonl (the report's hover)
            metas = [parse(p) for p in prompts]
        except PromptError:  # grid prompts outside the grammar: nothing to verify, the plain grid
            Image.fromarray(grid(images, ncol=8)).save(stem.with_suffix(".png"))
        else:
            results = [verify(img, m) for img, m in zip(images, metas, strict=True)]
            Image.fromarray(labelled_grid(images, metas, results, ncol=8)).save(stem.with_suffix(".png"))
            stem.with_suffix(".jsonl").write_text("".join(
                json.dumps(verdict_record(m, r, cell=i, seed=i)) + "\n"
                for i, (m, r) in enumerate(zip(metas, results, strict=True))))
        out = {
            "eval/gold_accuracy": summary["overall_strict"],
            "eval/geneval_accuracy": summary["overall_geneval"],
            "eval/exact_count": summary["exact_count"],
            "eval/debris": summary["debris"],
            "eval/gold_score": summary["gold_score"],
            "eval/n_images": summary["n_images"],
        }
        out.update({f"eval/strict/{tag}": v["strict"] for tag, v in summary["per_tag"].items()})
        if e.in_domain_per_tag:  # the same protocol on fixed train-split prompts: what training sees
            ind, _, _ = evaluate_shapesworld(backbone, split("train"), steps=e.steps, images_per_tag=e.in_domain_per_tag)
            out.update({"eval/id/gold_accuracy": ind["overall_strict"], "eval/id/exact_count": ind["exact_count"],
                        "eval/id/debris": ind["debris"], "eval/id/n_images": ind["n_images"]})
        out.update(monitor.measure_hacking(backbone, cfg, run_dir, iteration, ev_images, ev_metas, score_fn=score_fn,
                                           history=history))  # proxy vs gold, diversity
        return out


register_adapter("toy", ToyBackbone, "velocity")  # pixel-space rectified flow
register_world("shapes", ShapesWorld())
