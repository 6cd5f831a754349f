"""Batches of normalised float32 tensors cut straight from an in-memory uint8 ImageSet.

Why not ``torch.utils.data.DataLoader``: our images are already decoded uint8 tensors, so a
batch is one fancy-index plus one fused scale/shift. Worker processes, collation and per-example
Python transforms would only add overhead on 2 CPU cores.

Determinism: every random draw of an epoch (the shuffle permutation, the crop offsets and the flip
bits) comes from generators seeded by ``(seed, epoch)`` only. Augmentation parameters are drawn
for each *position of the epoch's global order*, not per rank or per batch, so a run on
``world_size`` ranks with per-rank batch ``b`` sees exactly the same augmented examples, grouped
into the same global batches, as a single process with batch ``b * world_size``.
"""

from __future__ import annotations

import math
from typing import Iterator, Sequence

import torch

from netrazor.data.types import ImageSet
from netrazor.errors import ConfigError

AUGMENTATIONS = ("none", "crop_flip", "shift")

# Zero padding of the CIFAR crop, as in He et al. 2016 ("4 pixels are padded on each side, and a
# 32x32 crop is randomly sampled from the padded image or its horizontal flip").
CROP_PADDING = 4
# Largest translation of the "shift" augmentation, in pixels: small random shifts are the classic
# augmentation of digit/clothing images (Simard et al. 2003), where a flip would change the class.
SHIFT_PADDING = 2

# Salts keep the shuffle stream and the augmentation stream independent of each other.
_SHUFFLE_SALT = 0x5EED
_AUGMENT_SALT = 0xA116


def _epoch_generator(seed: int, epoch: int, salt: int) -> torch.Generator:
    # A fixed integer mix (no Python hash(), which is salted per process) so every rank and every
    # re-run derives the same stream from (seed, epoch).
    mixed = (int(seed) * 1_000_003 + int(epoch) * 7_919 + salt * 104_729) % (2**63 - 1)
    return torch.Generator().manual_seed(mixed)


class BatchLoader:
    """Iterate an :class:`ImageSet` as ``(x float32 [B,C,H,W] normalised, y int64 [B])``.

    Knobs:
      batch_size  examples per batch *per rank* (the global batch is ``batch_size * world_size``).
      shuffle     new permutation every epoch, from ``(seed, epoch)``; call :meth:`set_epoch`.
      seed        base seed of shuffle and augmentation.
      mean, std   per-channel statistics in [0, 1] units (``DataBundle.mean``/``std``);
                  ``None`` means scale to [0, 1] only.
      augment     ``"none"`` or ``"crop_flip"`` (random crop with 4-px zero padding + horizontal
                  flip, vectorised per batch; padding is black *before* normalisation, as in
                  torchvision's ``RandomCrop(padding=4)``), or ``"shift"`` (random translation by
                  up to ``SHIFT_PADDING`` pixels per axis, zero fill, no flip: MNIST-style data).
      drop_last   drop the last incomplete batch of each rank.
      rank, world_size  DDP sharding like ``DistributedSampler``: the epoch order is padded by
                  wrap-around to a multiple of ``world_size`` and rank ``r`` takes positions
                  ``r, r + world_size, ...`` — disjoint shares of equal size that cover the set.
      device      where batches are placed (default: where the images are).
    """

    def __init__(
        self,
        imageset: ImageSet,
        batch_size: int,
        *,
        shuffle: bool = False,
        seed: int = 0,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        augment: str = "none",
        drop_last: bool = False,
        rank: int = 0,
        world_size: int = 1,
        device: torch.device | str | None = None,
    ) -> None:
        if batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {batch_size}; pass a positive batch size.")
        if augment not in AUGMENTATIONS:
            raise ConfigError(f"unknown augment {augment!r}; choose one of {', '.join(AUGMENTATIONS)}.")
        if world_size < 1 or not 0 <= rank < world_size:
            raise ConfigError(f"rank {rank} / world_size {world_size} is invalid; need 0 <= rank < world_size.")
        self.imageset = imageset
        self.batch_size = int(batch_size)
        self.shuffle = bool(shuffle)
        self.seed = int(seed)
        self.augment = augment
        self.drop_last = bool(drop_last)
        self.rank = int(rank)
        self.world_size = int(world_size)
        self.device = torch.device(device) if device is not None else imageset.images.device
        self.epoch = 0

        channels = int(imageset.images.shape[1])
        mean_t = torch.zeros(channels) if mean is None else torch.tensor(list(mean), dtype=torch.float32)
        std_t = torch.ones(channels) if std is None else torch.tensor(list(std), dtype=torch.float32)
        if mean_t.numel() != channels or std_t.numel() != channels:
            raise ConfigError(
                f"mean/std have {mean_t.numel()}/{std_t.numel()} values but the images have {channels} "
                "channels; pass the statistics of this data set (DataBundle.mean / .std)."
            )
        if bool((std_t <= 0).any()):
            raise ConfigError("std values must be positive; pass DataBundle.std.")
        # x_norm = (u8 / 255 - mean) / std  ==  u8 * scale - shift: one fused multiply-subtract.
        self._scale = (1.0 / (255.0 * std_t)).view(1, -1, 1, 1).to(self.device)
        self._shift = (mean_t / std_t).view(1, -1, 1, 1).to(self.device)

    # ----------------------------------------------------------------------------- sizes
    @property
    def num_examples(self) -> int:
        """Examples this rank sees per epoch (including wrap-around padding)."""
        n = len(self.imageset)
        return math.ceil(n / self.world_size) if n else 0

    def __len__(self) -> int:
        per_rank = self.num_examples
        if self.drop_last:
            return per_rank // self.batch_size
        return math.ceil(per_rank / self.batch_size)

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose shuffle and augmentation draws the next iteration uses."""
        self.epoch = int(epoch)

    # ----------------------------------------------------------------------------- order
    def epoch_order(self) -> torch.Tensor:
        """Global example order of the current epoch, padded by wrap-around to a multiple of world_size."""
        n = len(self.imageset)
        if self.shuffle:
            order = torch.randperm(n, generator=_epoch_generator(self.seed, self.epoch, _SHUFFLE_SALT))
        else:
            order = torch.arange(n)
        total = self.num_examples * self.world_size
        if total > n:
            # Same wrap-around as DistributedSampler: repeat from the start until divisible.
            reps = math.ceil((total - n) / n)
            order = torch.cat([order, order.repeat(reps)[: total - n]])
        return order

    def shard_positions(self) -> torch.Tensor:
        """Positions (into :meth:`epoch_order`) that belong to this rank."""
        total = self.num_examples * self.world_size
        return torch.arange(self.rank, total, self.world_size)

    # ----------------------------------------------------------------------------- iteration
    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        return self.batches(start=0)

    def batches(self, start: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Yield the batches of the current epoch from batch index ``start`` on.

        Resuming mid-epoch: ``set_epoch(e)`` then ``batches(start=k)`` yields exactly the batches
        ``k, k+1, ...`` an uninterrupted iteration would have yielded (same examples, same crops).
        """
        order = self.epoch_order()
        positions = self.shard_positions()
        offsets = flips = None
        padding = {"crop_flip": CROP_PADDING, "shift": SHIFT_PADDING}.get(self.augment, 0)
        if padding:
            # Draw for every global position, so draws do not depend on rank or batch size.
            g = _epoch_generator(self.seed, self.epoch, _AUGMENT_SALT)
            total = len(order)
            offsets = torch.randint(0, 2 * padding + 1, (total, 2), generator=g)
            if self.augment == "crop_flip":
                flips = torch.rand(total, generator=g) < 0.5
            else:
                flips = torch.zeros(total, dtype=torch.bool)
        images, labels = self.imageset.images, self.imageset.labels
        for b in range(start, len(self)):
            pos = positions[b * self.batch_size : (b + 1) * self.batch_size]
            idx = order[pos]
            x = images[idx]
            if offsets is not None:
                x = crop_flip(x, offsets[pos], flips[pos], padding=padding)
            x = x.to(self.device, non_blocking=True).float().mul_(self._scale).sub_(self._shift)
            yield x, labels[idx].to(self.device, non_blocking=True)


def crop_flip(images: torch.Tensor, offsets: torch.Tensor, flips: torch.Tensor, padding: int = CROP_PADDING) -> torch.Tensor:
    """Random crop from a zero-padded image plus horizontal flip, for a whole batch in one gather.

    ``images`` [B,C,H,W] (any dtype), ``offsets`` int [B,2] in ``[0, 2*padding]`` (top, left of the
    crop inside the padded image), ``flips`` bool [B]. The flip is folded into the column index
    (read columns right to left), so crop and flip cost one advanced-indexing pass.
    """
    b, c, h, w = images.shape
    padded = torch.nn.functional.pad(images, (padding, padding, padding, padding))
    rows = offsets[:, 0:1] + torch.arange(h)  # [B, H]
    col_step = torch.arange(w)
    cols = torch.where(flips[:, None], offsets[:, 1:2] + (w - 1 - col_step), offsets[:, 1:2] + col_step)  # [B, W]
    batch = torch.arange(b)[:, None, None]
    # padded[b, :, rows[b, i], cols[b, j]] -> [B, H, W, C]; move channels back.
    out = padded.permute(0, 2, 3, 1)[batch, rows[:, :, None], cols[:, None, :]]
    return out.permute(0, 3, 1, 2).contiguous()
