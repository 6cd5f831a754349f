"""Interrupt a recipe run when it reaches one stage, as Ctrl-C would: for the resume tests."""

from contextlib import contextmanager

import pytest

import netrazor.pipeline.runner as runner


@contextmanager
def interrupted_at(monkeypatch, stage_kind: str):
    """Inside the block a compress run raises KeyboardInterrupt as it starts ``stage_kind`` (the block
    must see it: it fails otherwise); afterwards runs go through again."""
    real_run_stage = runner.run_stage

    def crash(kind, *args):
        if kind == stage_kind:
            raise KeyboardInterrupt
        return real_run_stage(kind, *args)

    monkeypatch.setattr(runner, "run_stage", crash)
    try:
        with pytest.raises(KeyboardInterrupt):
            yield
    finally:
        monkeypatch.setattr(runner, "run_stage", real_run_stage)
