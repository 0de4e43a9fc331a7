"""Shared by the study tests: vce-layout run folders written with the project's Writer, and a real (tiny, random)
StableDiffusionSafetyChecker made to flag one planted image."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from PIL import Image, ImageDraw

from digin_cli.io.writer import Writer
from digin_cli.safety import SafetyChecker

EVIL = "</script><img src=x onerror=alert(1)>"
IMAGES = ["cat.png", f"{EVIL}.png", "dog.png"]
TARGETS = ["tiger cat", EVIL]  # class names as a classifier would give them; one is markup


def picture(seed: int, size: int = 48) -> Image.Image:
    """A distinct, smooth picture per seed (random colour blobs on a gradient)."""
    g = torch.Generator().manual_seed(seed)
    base = torch.linspace(0, 1, size)
    colour = torch.rand(3, generator=g)
    pixels = (colour[:, None, None] * 0.6 + 0.4 * base[None, :, None] * base[None, None, :]) * 255
    image = Image.fromarray(pixels.permute(1, 2, 0).to(torch.uint8).numpy())
    x, y = (torch.rand(2, generator=g) * size * 0.6).tolist()
    ImageDraw.Draw(image).ellipse((x, y, x + size // 3, y + size // 3), fill=tuple(int(c) for c in
                                                                                   (torch.rand(3, generator=g) * 255)))
    return image


def planted() -> Image.Image:
    """The image the stand-in checker flags: a hard checkerboard no smooth picture resembles."""
    image = Image.new("RGB", (48, 48), (255, 0, 255))
    draw = ImageDraw.Draw(image)
    for i in range(0, 48, 6):
        for j in range(0, 48, 6):
            if (i + j) // 6 % 2:
                draw.rectangle((i, j, i + 5, j + 5), fill=(0, 255, 0))
    return image


def vce_run(root: Path, run: str, name: str = "counterfactual.png", unsafe: tuple[str, str] | None = None,
            skip: tuple[str, str] | None = None) -> Path:
    """A finished vce run folder: per (image, target) the files vce writes, explanation under ``name``.

    ``unsafe`` = (image, target) whose counterfactual is the planted image; ``skip`` leaves that item out."""
    folder = Path(root) / run
    writer = Writer(folder)
    folder.mkdir(parents=True)
    (folder / "config.yaml").write_text("task:\n  name: vce\n")
    (folder / "status.json").write_text(json.dumps({"status": "ok", "task": "vce"}))
    seed = 0
    for n, image in enumerate(IMAGES):
        for t, target in enumerate(TARGETS):
            seed += 1
            if (image, target) == skip:
                continue
            item = writer.item_dir(image, f"{t + 1}_{target}")
            writer.save_image(item, "original.png", picture(1000 + n))
            writer.save_image(item, "mask_overlay.png", picture(2000 + n))
            cf = planted() if (image, target) == unsafe else picture(seed * 7 + (0 if run.endswith("a") else 3))
            writer.save_image(item, name, cf)
            writer.save_metrics(item, {"image": image, "start": "tabby", "target": target,
                                       "summary": {"flipped": True}})
    return folder


def tiny_checker(flag: Image.Image, others: list[Image.Image]) -> SafetyChecker:
    """diffusers' StableDiffusionSafetyChecker with a tiny random CLIP vision tower (built from a config), whose one
    active concept embedding is ``flag``'s own embedding, thresholded between it (cosine 1) and ``others``."""
    from diffusers.pipelines.stable_diffusion.safety_checker import StableDiffusionSafetyChecker
    from transformers import CLIPConfig, CLIPImageProcessor

    torch.manual_seed(0)
    config = CLIPConfig(text_config={"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1,
                                     "num_attention_heads": 2, "vocab_size": 100},
                        vision_config={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
                                       "num_attention_heads": 4, "image_size": 32, "patch_size": 8},
                        projection_dim=16)
    model = StableDiffusionSafetyChecker(config).eval()
    processor = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})

    def embed(images):
        pixels = processor(images=images, return_tensors="pt").pixel_values
        with torch.no_grad():
            out = model.visual_projection(model.vision_model(pixels)[1])
        return torch.nn.functional.normalize(out, dim=-1)

    target = embed([flag])[0]
    nearest = float((embed(others) @ target).max())
    assert nearest < 0.999, "the planted image must be told apart from the others"
    with torch.no_grad():
        model.concept_embeds[0] = target
        model.concept_embeds_weights.fill_(2.0)  # cosine never exceeds 1: every other concept stays silent
        model.concept_embeds_weights[0] = (1.0 + nearest) / 2
        model.special_care_embeds_weights.fill_(2.0)
    return SafetyChecker(model, processor, "tiny-planted")
