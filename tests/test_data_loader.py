"""BatchLoader: normalisation, per-epoch determinism, DDP shards, crop_flip, mid-epoch resume."""

from __future__ import annotations

import pytest
import torch

from netrazor.data import BatchLoader, ImageSet, make_synthetic
from netrazor.data.loader import CROP_PADDING, SHIFT_PADDING, crop_flip
from netrazor.errors import ConfigError


def numbered_set(n: int = 50, c: int = 3, h: int = 8, w: int = 8) -> ImageSet:
    """Image i is filled with value i, so every batch reveals which examples it holds."""
    images = torch.arange(n, dtype=torch.uint8).view(n, 1, 1, 1).expand(n, c, h, w).contiguous()
    return ImageSet(images, torch.arange(n) % 10)


def ids(loader: BatchLoader) -> list[list[int]]:
    return [y.tolist() for _, y in loader]


def test_normalisation_matches_bundle():
    data = make_synthetic(n_train=40, n_val=8, n_test=8)
    loader = BatchLoader(data.train, 16, mean=data.mean, std=data.std)
    x, y = next(iter(loader))
    assert x.dtype == torch.float32 and y.dtype == torch.int64
    assert torch.allclose(x, data.normalize(data.train.images[:16]), atol=1e-5)
    assert torch.equal(y, data.train.labels[:16])
    plain = next(iter(BatchLoader(data.train, 16)))[0]
    assert torch.allclose(plain, data.train.images[:16].float() / 255)


def test_len_and_drop_last():
    s = numbered_set(50)
    assert len(BatchLoader(s, 16)) == 4 and sum(len(b) for b in ids(BatchLoader(s, 16))) == 50
    assert len(BatchLoader(s, 16, drop_last=True)) == 3
    assert [len(b) for b in ids(BatchLoader(s, 16, drop_last=True))] == [16, 16, 16]


def test_shuffle_is_deterministic_per_epoch():
    s = ImageSet(numbered_set(50).images, torch.arange(50))
    a, b = BatchLoader(s, 8, shuffle=True, seed=3), BatchLoader(s, 8, shuffle=True, seed=3)
    a.set_epoch(2), b.set_epoch(2)
    assert ids(a) == ids(b) and ids(a) == ids(a)  # re-iterating repeats the epoch
    first = ids(a)
    a.set_epoch(3)
    assert ids(a) != first
    assert sorted(sum(ids(a), [])) == list(range(50))  # a permutation: every example once
    assert ids(BatchLoader(s, 8, shuffle=True, seed=4)) != ids(BatchLoader(s, 8, shuffle=True, seed=3))
    assert sum(ids(BatchLoader(s, 8)), []) == list(range(50))  # no shuffle: in order


@pytest.mark.parametrize("n,world", [(50, 2), (50, 3), (7, 4)])
def test_ddp_shards_disjoint_equal_and_covering(n, world):
    s = ImageSet(numbered_set(n).images, torch.arange(n))
    shards = []
    for rank in range(world):
        loader = BatchLoader(s, 4, shuffle=True, seed=1, rank=rank, world_size=world)
        loader.set_epoch(5)
        shards.append(sum(ids(loader), []))
    per_rank = -(-n // world)
    assert all(len(sh) == per_rank for sh in shards)  # equal size (wrap-around padding)
    together = sum(shards, [])
    assert set(together) == set(range(n))  # covering
    # Disjoint apart from the wrap-around padding, which repeats the first examples of the order.
    assert len(together) - len(set(together)) == per_rank * world - n


def test_ddp_global_batches_equal_single_process_with_augmentation():
    s = numbered_set(48)
    single = BatchLoader(s, 8, shuffle=True, seed=0, augment="crop_flip")
    single.set_epoch(1)
    ranks = [BatchLoader(s, 4, shuffle=True, seed=0, augment="crop_flip", rank=r, world_size=2) for r in (0, 1)]
    for r in ranks:
        r.set_epoch(1)
    for (xs, ys), (x0, y0), (x1, y1) in zip(single, *ranks):
        # Rank r holds global positions r, r+2, ... of the same global batch, identically augmented.
        assert torch.equal(ys[0::2], y0) and torch.equal(ys[1::2], y1)
        assert torch.equal(xs[0::2], x0) and torch.equal(xs[1::2], x1)


def test_crop_flip_shape_dtype_changes_and_is_deterministic():
    torch.manual_seed(0)
    images = torch.randint(0, 256, (64, 3, 12, 12), dtype=torch.uint8)
    s = ImageSet(images, torch.zeros(64, dtype=torch.long))
    loader = BatchLoader(s, 64, augment="crop_flip", seed=0)
    plain = next(iter(BatchLoader(s, 64)))[0]
    x = next(iter(loader))[0]
    assert x.shape == plain.shape and x.dtype == torch.float32
    changed = (x != plain).flatten(1).any(1)
    assert changed.float().mean() > 0.9  # P(no crop shift and no flip) = 1/81 * 1/2
    assert torch.equal(x, next(iter(loader))[0])  # same (seed, epoch) -> same augmentation
    loader.set_epoch(1)
    assert not torch.equal(x, next(iter(loader))[0])


def test_crop_flip_matches_naive_definition():
    images = torch.randint(0, 256, (3, 2, 5, 6), dtype=torch.uint8)
    offsets = torch.tensor([[0, 0], [8, 3], [4, 8]])
    flips = torch.tensor([False, True, True])
    out = crop_flip(images, offsets, flips)
    p = CROP_PADDING
    padded = torch.nn.functional.pad(images, (p, p, p, p))
    for i in range(3):
        top, left = offsets[i].tolist()
        ref = padded[i, :, top : top + 5, left : left + 6]
        assert torch.equal(out[i], ref.flip(-1) if flips[i] else ref)
    assert torch.equal(crop_flip(images, torch.full((3, 2), p), torch.zeros(3, dtype=torch.bool)), images)


def test_shift_translates_without_flipping():
    # A single bright pixel in the middle of each image: after "shift" it must sit at most
    # SHIFT_PADDING pixels away per axis, never mirrored, and nothing else may light up.
    n, h, w = 200, 9, 9
    images = torch.zeros(n, 1, h, w, dtype=torch.uint8)
    images[:, 0, 4, 2] = 255  # left of centre: a flip would move it to column 6
    loader = BatchLoader(ImageSet(images, torch.zeros(n, dtype=torch.long)), n, augment="shift", seed=0)
    x = next(iter(loader))[0]
    assert x.shape == (n, 1, h, w)
    lit = (x[:, 0] > 0.5).nonzero()
    assert lit.shape[0] == n  # one lit pixel per image: a translation, no blur, no loss at this size
    dr, dc = lit[:, 1] - 4, lit[:, 2] - 2
    assert dr.abs().max() == SHIFT_PADDING and dc.abs().max() == SHIFT_PADDING
    assert (dr != 0).float().mean() > 0.6 and (dc != 0).float().mean() > 0.6  # P(no shift per axis) = 1/5
    assert torch.equal(x, next(iter(loader))[0])  # deterministic per (seed, epoch)


def test_unknown_augment_is_refused_with_the_choices():
    with pytest.raises(ConfigError, match="shift"):
        BatchLoader(numbered_set(8), 4, augment="rotate")


def test_mid_epoch_resume_yields_the_same_batches():
    s = numbered_set(40)
    loader = BatchLoader(s, 8, shuffle=True, seed=2, augment="crop_flip")
    loader.set_epoch(4)
    full = list(loader)
    tail = list(loader.batches(start=2))
    assert len(tail) == len(full) - 2
    for (a, ya), (b, yb) in zip(full[2:], tail):
        assert torch.equal(a, b) and torch.equal(ya, yb)


def test_bad_arguments_raise_config_error():
    s = numbered_set(10)
    with pytest.raises(ConfigError, match="augment"):
        BatchLoader(s, 4, augment="mixup")
    with pytest.raises(ConfigError, match="rank"):
        BatchLoader(s, 4, rank=2, world_size=2)
    with pytest.raises(ConfigError, match="channels"):
        BatchLoader(s, 4, mean=(0.5,), std=(0.2,))
    with pytest.raises(ConfigError, match="batch_size"):
        BatchLoader(s, 0)
