"""`netrazor depth-bound`: EBCLE's entropy statistics, depth bound, shaped model and identity probe."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

console = Console()


def _fmt(v, digits=3):
    return "—" if v is None else (f"{v:.{digits}f}" if isinstance(v, float) else f"{v:,}" if isinstance(v, int) else str(v))


def _entropy_table(rep: dict) -> Table:
    e = rep["entropy"]
    t = Table(title=f"entropy of {rep['data']} (training split, {e['mode']}, bits of 8)")
    t.add_column("statistic")
    t.add_column("bits", justify="right")
    t.add_row("images", f"{e['n_images']:,}")
    for key in ("mean", "std", "min", "max", "pooled"):
        t.add_row(key, _fmt(e[key]))
    for key, value in e["percentiles"].items():
        t.add_row(key, _fmt(value))
    return t


def _shape_table(rep: dict) -> Table:
    s = rep["shape"]
    t = Table(title=f"{s['model']}: original vs EBCLE-shaped (keep {s['keep']}, bound {rep['bound']} conv layers)")
    t.add_column("")
    t.add_column("original", justify="right")
    t.add_column("shaped", justify="right")
    t.add_row("conv layers (main path)", _fmt(s["layers_original"]), _fmt(s["layers"]))
    t.add_row("params", _fmt(s["params_original"]), _fmt(s["params"]))
    t.add_row("MACs (batch 1)", _fmt(s["macs_original"]), _fmt(s["macs"]))
    t.add_row("width multiplier (relative)", "1", _fmt(s["width_mult_rel"]))
    t.add_row("within bound", "", "yes" if s["within_bound"] else "no (family's minimum depth)")
    return t


def _probe_table(p: dict, bound: int) -> Table:
    t = Table(title=f"identity probe ({p['n_examples']} val images, criterion {p['criterion']}, "
                    f"residual <= {p['residual_threshold']}, CKA >= {p['cka_threshold']})")
    for col in ("#", "block", "conv depth", "||F(x)||/||x||", "CKA", "lesion Δacc", "identity-like"):
        t.add_column(col, justify="right" if col not in ("block",) else "left")
    for r in p["rows"]:
        mark = "[dim]yes[/]" if r["identity_like"] else "no"
        depth = f"{r['conv_depth']}" + (" [red]>bound[/]" if r["conv_depth"] > bound else "")
        t.add_row(str(r["index"]), r["name"], depth, _fmt(r["residual"]), _fmt(r["cka"]), _fmt(r.get("lesion")), mark)
    return t


def register(app: typer.Typer) -> None:
    @app.command("depth-bound")
    def depth_bound(
        data: str = typer.Option(..., "--data", "-d", help="Data set: mnist, fashion-mnist, cifar10, synthetic or a path."),
        model: Optional[str] = typer.Option("resnet56", "--model", "-m", help="Zoo model to shape within the bound ('' to skip)."),
        probe: Optional[Path] = typer.Option(None, "--probe", help="A trained checkpoint to probe (X, X.safetensors or X.json)."),
        rule: Optional[str] = typer.Option(None, "--rule", help="Depth rule name (default: entropy-halvings)."),
        k: Optional[float] = typer.Option(None, "--k", help="Constant of the entropy-halvings rule (default: calibrated)."),
        keep: str = typer.Option("params", "--keep", help="What the shaped model keeps: params, flops or width."),
        mode: str = typer.Option("channel", "--mode", help="Entropy per channel ('channel') or of the luma ('luma')."),
        probe_images: int = typer.Option(256, "--probe-images", help="Validation images the probe uses."),
        criterion: str = typer.Option("auto", "--criterion", help="Identity-like test: auto, residual, cka, both or lesion."),
        residual_threshold: float = typer.Option(0.1, "--residual-threshold", help="||F(x)||/||x|| at or below this is identity-like."),
        cka_threshold: float = typer.Option(0.95, "--cka-threshold", help="CKA at or above this is identity-like."),
        data_root: Optional[Path] = typer.Option(None, help="Where data sets live (default $NETRAZOR_DATA or ~/.cache/netrazor/data)."),
        as_json: bool = typer.Option(False, "--json", help="Print the report as JSON instead of tables."),
    ) -> None:
        """EBCLE: entropy statistics of a data set, the depth bound, and the broader-shallower model."""
        from netrazor.data import load_data
        from netrazor.methods.ebcle.report import depth_bound_report
        from netrazor.surgery import load_model  # reads zoo and altered architectures alike

        bundle = load_data(data, root=data_root)
        probe_model = load_model(probe) if probe is not None else None
        options = {"k": k} if k is not None else None
        rep = depth_bound_report(bundle, model or None, rule=rule, rule_options=options, keep=keep,
                                 entropy_mode=mode, probe_model=probe_model, probe_images=probe_images,
                                 criterion=criterion, residual_threshold=residual_threshold, cka_threshold=cka_threshold)
        if as_json:
            typer.echo(json.dumps(rep, indent=2, default=str))
            return
        console.print(_entropy_table(rep))
        console.print(f"rule [bold]{rep['rule_object']}[/]: h = H/8 = {rep['entropy_ratio']:.3f}, "
                      f"log2(side) = {rep['halvings']:.2f} -> bound [bold]{rep['bound']}[/] conv layers")
        if "shape" in rep:
            console.print(_shape_table(rep))
        if "probe" in rep:
            p = rep["probe"]
            console.print(_probe_table(p, rep["bound"]))
            console.print(f"effective depth: [bold]{p['effective_depth']}[/] of {p['total_blocks']} blocks "
                          f"= {p['effective_conv_layers']} conv layers (bound {rep['bound']}); "
                          f"{p['active_blocks']} blocks not identity-like")
