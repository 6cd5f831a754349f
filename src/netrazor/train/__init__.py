"""netrazor.train: the one training loop (callbacks, schedules, checkpoint/resume, DDP), losses, recipes."""

from netrazor.train.callbacks import Callback, CallbackList, EarlyStopping
from netrazor.train.config import TrainConfig
from netrazor.train.distributed import DistInfo, env_dist_info, init_distributed
from netrazor.train.losses import cross_entropy_loss, distillation_loss, distillation_loss_fn
from netrazor.train.recipes import default_config
from netrazor.train.schedule import LRSchedule
from netrazor.train.trainer import History, Trainer, seed_everything

__all__ = [
    "Callback",
    "CallbackList",
    "DistInfo",
    "EarlyStopping",
    "History",
    "LRSchedule",
    "TrainConfig",
    "Trainer",
    "cross_entropy_loss",
    "default_config",
    "distillation_loss",
    "distillation_loss_fn",
    "env_dist_info",
    "init_distributed",
    "seed_everything",
]
