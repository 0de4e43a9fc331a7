"""Every config group option composes; the groups the CLI promises exist; launcher presets resolve."""

import pytest
from hydra import compose
from hydra.utils import get_class, get_method

from digin_cli.configs import GROUPS, options


pytestmark = pytest.mark.usefixtures("hydra_dir")  # tests/conftest.py: compose from conf/


def test_default_config_has_every_group():
    cfg = compose("config")
    for group in ("task", "generator", "classifier", "classifier2", "optimizer", "segmentation", "captioner",
                  "logger", "paths"):
        assert group in cfg
    assert cfg.device == "auto" and cfg.dtype == "fp32"
    assert cfg.generator.num_steps == 20 and cfg.generator.guidance_scale == 3.0 and cfg.generator.resolution == 512
    assert cfg.optimizer.lr == 0.01 and cfg.optimizer.latent_lr_factor == 0.1 and cfg.optimizer.steps == 20


@pytest.mark.parametrize("group", [g for g in GROUPS if g != "paths"])
def test_every_option_composes(group):
    assert options(group), group
    for option in options(group):
        cfg = compose("config", overrides=[f"{group}={option}"])
        node = cfg if group == "experiment" else cfg[group]
        target = node.get("_target_") if group != "experiment" else None
        if target:
            assert callable(get_method(target)) or get_class(target)


def test_classifier2_takes_the_classifier_names():
    assert options("classifier2") == options("classifier")
    cfg = compose("config", overrides=["classifier=tiny_a", "classifier2=tiny_b"])
    assert cfg.classifier.seed != cfg.classifier2.seed


def test_generator_configs_share_the_promised_keys():
    for option in options("generator"):
        cfg = compose("config", overrides=[f"generator={option}"]).generator
        assert {"pretrained", "num_steps", "guidance_scale", "resolution", "source", "sampler", "lora"} <= set(cfg)
        assert cfg.sampler in ("ddim", "lcm")


@pytest.mark.parametrize("launcher,target", [("slurm", "SlurmLauncher"), ("local", "LocalLauncher"),
                                             ("submitit_slurm", "SlurmLauncher")])
def test_submitit_launcher_presets_resolve(launcher, target):
    cfg = compose("config", overrides=[f"hydra/launcher={launcher}"], return_hydra_config=True)
    assert cfg.hydra.launcher._target_.endswith(target)
    if launcher == "slurm":
        assert cfg.hydra.launcher.gpus_per_node == 1


def test_run_dirs_are_unique_per_process_and_grouped_by_task():
    cfg = compose("config", overrides=["task=sample"], return_hydra_config=True)
    run_dir = str(cfg.hydra.run.dir)
    assert "/sample/runs/" in run_dir and run_dir.split("_")[-1] != ""
    from omegaconf import OmegaConf

    assert OmegaConf.to_container(cfg.hydra.sweep, resolve=False)["subdir"] == "${hydra.job.num}"


def test_vce_selects_hq_sam_unless_the_command_line_says_otherwise():
    # Eq. 4 without a mask is a global L2: a bare task=vce must not run maskless.
    assert compose("config", overrides=["task=vce"]).segmentation.name == "sam_hq"
    for choice in ("none", "attention", "tiny_sam"):
        assert compose("config", overrides=["task=vce", f"segmentation={choice}"]).segmentation.name == choice
        assert compose("config", overrides=[f"segmentation={choice}", "task=vce"]).segmentation.name == choice
    assert compose("config").segmentation.name == "none"  # other tasks keep no segmenter


def test_vce_selects_a_captioner_unless_the_command_line_says_otherwise():
    # The paper inverts a caption of the image; the bare template is the ablation.
    cfg = compose("config", overrides=["task=vce"])
    assert cfg.captioner.name == "hf" and cfg.captioner.model == "Salesforce/blip-image-captioning-large"
    assert cfg.captioner.template == "an image of a {}"
    for args in (["task=vce", "captioner=none"], ["captioner=none", "task=vce"]):
        assert compose("config", overrides=args).captioner.name == "none"
    assert compose("config").captioner.name == "none"  # other tasks caption nothing


@pytest.mark.parametrize("figure", ["fig6", "fig8"])
def test_paper_uvce_figures_use_the_authors_set_up(figure):
    cfg = compose("config", overrides=[f"experiment={figure}"])
    assert cfg.task.name == "vce" and cfg.task.start == "label"  # the dataset label, as uvces_imagenet.py
    assert cfg.segmentation.name == "sam_hq" and cfg.captioner.name == "hf"
    if figure == "fig6":
        assert cfg.classifier.name == "vit_base_patch16_384.augreg_in21k_ft_in1k"
        assert cfg.task.image_list == "dig_in" and cfg.task.target_strategy == "wordnet_cluster"
    else:  # the paper's zero-shot CLIP, misclassified viaducts explained toward their label
        assert cfg.classifier.model == "ViT-B-16" and list(cfg.task.targets) == ["viaduct"]


def test_zoo_classifiers_checkpoint_their_gradients_when_the_whole_loss_is_held():
    # The single backward holds 3 images x 16 cutouts (x 2 classifiers) of activations: checkpoint, as the authors;
    # the two-stage backward holds one chunk, and "auto" leaves them plain (build_classifier resolves it).
    zoo = [o for o in options("classifier")
           if str(compose("config", overrides=[f"classifier={o}"]).classifier.get("_target_", "")).endswith(
               "TimmClassifier") and o != "timm"]  # `timm` is the user's own architecture: their choice
    assert {"convnext_b", "vit_b", "eva02", "seresnet152d", "robust_vit_s"} <= set(zoo)
    for option in zoo:
        assert compose("config", overrides=[f"classifier={option}"]).classifier.grad_checkpointing == "auto", option
    off = compose("config", overrides=["classifier=convnext_b", "classifier.grad_checkpointing=false"])
    assert off.classifier.grad_checkpointing is False


@pytest.mark.parametrize("override,message", [
    ("optimizer.steps=abc", "optimizer.steps must be an integer >= 0, got 'abc'"),
    ("optimizer.steps=2.5", "optimizer.steps must be an integer >= 0, got 2.5"),
    ("task.seeds=[a]", "task.seeds must be a list of integers, got 'a'"),
    ("task.seeds=[0,true]", "task.seeds must be a list of integers, got True"),
    ("optimizer.lr=0", "optimizer.lr must be a number > 0, got 0"),
    ("optimizer.lr=-1e-3", "optimizer.lr must be a number > 0, got -0.001"),
    ("optimizer.lr=fast", "optimizer.lr must be a number > 0, got 'fast'"),
    ("generator.resolution=100", "generator.resolution must be a positive multiple of 8"),
    ("seed=x", "seed must be an integer, got 'x'"),
    ("classifier2.width=abc", "classifier2.width must be an integer >= 1, got 'abc'"),
    ("safety=maybe", "safety must be true or false, got 'maybe'"),
])
def test_check_config_names_the_key_and_the_expected_type(override, message):
    from hydra.errors import HydraException

    from digin_cli.schemas import type_error
    from digin_cli.configs import check_config
    from digin_cli.errors import DiginError

    def checked(overrides):  # as the CLI pre-flight: a schema refuses a type while composing, check_config the rest
        try:
            cfg = compose("config", overrides=overrides)
        except HydraException as err:
            raise DiginError(type_error(err) or str(err)) from None
        check_config(cfg)

    checked(["experiment=demo"])  # the shipped values pass
    with pytest.raises(DiginError) as err:
        checked(["experiment=demo", override])
    assert message in str(err.value) and " — pass e.g. " in str(err.value) and "\n" not in str(err.value)


def test_every_cache_follows_paths_cache_dir():
    cfg = compose("config", overrides=["classifier=clip_vit_b16_zeroshot", "classifier2=clip_vit_b16_zeroshot",
                                       "paths.cache_dir=/scratch/me/digin"])
    assert cfg.classifier.cache_dir == "/scratch/me/digin/zeroshot"
    assert cfg.classifier2.cache_dir == "/scratch/me/digin/zeroshot"
@pytest.mark.parametrize("task", ["explain", "hard_prompt"])
def test_prompt_tasks_select_lcm_and_prompt_optimizer_and_the_command_line_wins(task):
    cfg = compose("config", overrides=[f"task={task}"])
    assert cfg.generator.name == "lcm_lora" and cfg.generator.sampler == "lcm" and cfg.generator.num_steps == 4
    assert cfg.optimizer.fresh_latent and cfg.optimizer.select == "last" and cfg.optimizer.loss_steps == 1
    assert cfg.optimizer.augment.num == 0
    cfg = compose("config", overrides=[f"task={task}", "generator=sd15", "optimizer.steps=7"])
    assert cfg.generator.name == "sd15" and cfg.optimizer.steps == 7
    assert compose("config").generator.sampler == "ddim" and not compose("config").optimizer.fresh_latent


def test_bad_sampler_and_selection_values_are_one_line_errors():
    from digin_cli.configs import check_config
    from digin_cli.errors import DiginError

    for override, needle in [("generator.sampler=euler", "generator.sampler="), ("optimizer.select=first",
                             "optimizer.select="), ("optimizer.keep_images_every=0", "keep_images_every"),
                            ("segmentation=sam_hq segmentation.point_sampling=even", "segmentation.point_sampling=")]:
        with pytest.raises(DiginError, match=needle):
            check_config(compose("config", overrides=override.split()))


def test_suggest_key_finds_the_close_key_at_the_level_it_leaves_the_config():
    from digin_cli.errors import suggest_key

    cfg = compose("config", overrides=["task=disagreement"])
    assert suggest_key("task.clases", cfg) == " (did you mean task.classes?)"
    assert suggest_key("+tsk.classes", cfg) == " (did you mean task.classes?)"
    assert suggest_key("optimizer.augment.nm", cfg) == " (did you mean optimizer.augment.num?)"
    assert suggest_key("task.zzzzzz", cfg) == ""
    vce = compose("config", overrides=["task=vce"])  # no task.classes there: the closest key it has
    assert suggest_key("task.clases", vce) == " (did you mean task.image_classes?)"
