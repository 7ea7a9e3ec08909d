"""`slas export` of a ShapesWorld run: its folders reload in the stock diffusers / transformers classes, which compute
what the run's model computes."""

import json

import torch

from _toyruns import GRID_PROMPTS, same_outputs
from slas.apps.cli import main
from slas.recipe.run_dir import load_run


def test_export_a_shapesworld_run_reloads_in_stock_classes(labelled_run, tmp_path, capsys):
    from diffusers import UNet2DConditionModel
    from transformers import CLIPTextModel, PreTrainedTokenizerFast

    out_run, _ = labelled_run
    dest = tmp_path / "export"
    assert main(["export", str(out_run), "--out", str(dest)]) == 0
    printed = capsys.readouterr().out
    assert f"wrote {dest / 'unet'}" in printed and f"wrote {dest / 'text_encoder'}" in printed
    info = json.loads((dest / "slas_export.json").read_text())
    assert info["backbone"] == "toy" and info["iteration"] == 1 and info["toy_config"]["patch"] == 2
    unet = UNet2DConditionModel.from_pretrained(dest / "unet").eval()
    te = CLIPTextModel.from_pretrained(dest / "text_encoder").eval()
    tok = PreTrainedTokenizerFast.from_pretrained(dest / "tokenizer")
    model = load_run(out_run, ema=False).backbone.model.eval()
    ids = tok(GRID_PROMPTS, padding="max_length", max_length=info["toy_config"]["max_tokens"], return_tensors="pt")
    assert torch.equal(ids["input_ids"], model.tokenize(GRID_PROMPTS)["input_ids"])
    same_outputs(unet, model.unet, te, model.text_encoder, model)
