"""The SLURM launcher's config schema: submitit's, plus how often to look at the jobs and when one is gone.

Hydra imports every module under ``hydra_plugins`` when it starts (outside sys.modules, hence no ``from __future__
import annotations``: dataclasses would look the module up), so the schema is in its ConfigStore before
``conf/hydra/launcher/slurm.yaml`` extends it.
"""

from dataclasses import dataclass

from hydra.core.config_store import ConfigStore
from hydra_plugins.hydra_submitit_launcher.config import SlurmQueueConf


@dataclass
class DiginSlurmQueueConf(SlurmQueueConf):
    _target_: str = "hydra_plugins.digin_launcher.launchers.SlurmLauncher"
    # seconds between two looks at the jobs' states (sacct, then squeue); submitit alone waits up to 600
    poll_s: float = 60.0
    # seconds a job may be in neither sacct nor squeue before it counts as gone (then incomplete if it left no result)
    gone_after_s: float = 300.0


ConfigStore.instance().store(group="hydra/launcher", name="digin_slurm", node=DiginSlurmQueueConf, provider="digin")
