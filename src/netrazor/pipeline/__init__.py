"""Recipes -> stages -> artifact -> report, with a run store and benchmark records."""

from netrazor.pipeline.recipe import Recipe, load_recipe, parse_recipe, shipped_recipes
from netrazor.pipeline.report import write_report
from netrazor.pipeline.runner import CompressResult, compress, fork_run

__all__ = ["CompressResult", "Recipe", "compress", "fork_run", "load_recipe", "parse_recipe", "shipped_recipes", "write_report"]
