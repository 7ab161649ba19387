"""Experiment grids as data: the write-up's comparisons, each a list of variants, the seeds that replicate them and
the variant the others are measured against.

    interest grids                                        # every built-in grid, its variants and parameter counts
    interest run --grid writeup-architecture --seeds 1,2,3
    interest run --grid my-grid.yaml                      # a file: a list of variants, or the mapping below

A grid file is YAML or JSON: a list of variants (``trainer.variants``: a preset name or ``{name, preset, set}``),
or a mapping ::

    name: dff                 # optional: how reports call the grid (default: the file's stem)
    baseline: dff-4x          # optional: the variant the others are compared with (default: the one named
                              # "baseline", else the first)
    seeds: [1, 2, 3]          # optional: every variant trains once per seed (a VariantSpec per variant and seed)
    variants:
      - {name: dff-2x, preset: baseline, set: {d_ff_ratio: 2}}
      - {name: dff-4x, preset: baseline}
      - {name: hinge-0.5, preset: baseline, set: {objective.penalty: hinge, objective.penalty_lambda: 1.0e-3},
         tau_ratio: 0.5}

``set`` keys are ``trainer.job`` override keys: ``objective.`` for the loss and penalty (``ObjectiveConfig``), a bare
field name for model and training settings. ``tau_ratio`` (grids only) sets a hinge penalty's target norm
``objective.penalty_tau`` as a share of the unpenalised model's
mean user-embedding norm, which the run is told (``interest run --unpenalised-norm N``): the write-up's tau 180
was 0.53 of its unpenalised 338.6, and a norm scale is a property of the model and the training length, not a
constant.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import PurePath
from typing import Any

from core.configs import ConfigError, require, safe_yaml
from trainer.variants import VariantSpec, parse_variants

DEFAULT_SEEDS = (1, 2, 3)  # the built-in grids' replicates: enough for an interval across seeds
GRID_KEYS = ("name", "note", "baseline", "seeds", "variants")


@dataclass(frozen=True)
class Grid:
    name: str  # how `interest grids`, `--grid` and reports call it
    note: str  # what the write-up found, or what the grid is for
    variants: tuple[VariantSpec, ...]  # one per variant, without seeds (the seeds below replicate them)
    seeds: tuple[int, ...] = ()  # every variant trains once per seed; empty: once, with its preset's seed
    baseline: str = "baseline"  # the variant the others are compared with
    # variant name -> its hinge target as a share of the unpenalised mean user norm (see the module docstring)
    tau_ratios: Mapping[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        names = [v.name for v in self.variants]
        require(len(names) > 0, f"grid {self.name}: variants", "must list at least one variant")
        require(len(set(names)) == len(names), f"grid {self.name}: variants", f"names must be unique, got {names}")
        require(self.baseline in names, f"grid {self.name}: baseline",
                f"{self.baseline!r} is not one of its variants ({', '.join(names)})")
        require(len(set(self.seeds)) == len(self.seeds) and all(_is_int(s) for s in self.seeds),
                f"grid {self.name}: seeds", f"must be distinct integers, got {list(self.seeds)}")
        for name, ratio in self.tau_ratios.items():
            require(name in names, f"grid {self.name}: tau_ratio", f"names no variant: {name!r}")
            require(isinstance(ratio, int | float) and ratio > 0, f"grid {self.name}: {name}.tau_ratio",
                    f"must be a number > 0, got {ratio!r}")
        if self.seeds:
            seeded = [v.name for v in self.variants if v.seed is not None]
            require(not seeded, f"grid {self.name}: seeds",
                    f"given for the grid and for variant {', '.join(seeded)}: give seeds once, in `seeds:`")

    def expand(self, seeds: Sequence[int] | None = None, unpenalised_norm: float | None = None) -> list[VariantSpec]:
        """The runs: every variant once per seed (``seeds`` replaces the grid's own; ``[]``: no replicates), hinge
        targets resolved against ``unpenalised_norm``; run names are unique (``name-seedN``)."""
        seeds = tuple(self.seeds if seeds is None else seeds)
        if self.tau_ratios:
            require(unpenalised_norm is not None and unpenalised_norm > 0, "--unpenalised-norm",
                    f"grid {self.name} sets hinge targets relative to the unpenalised model's mean user norm "
                    f"({', '.join(self.tau_ratios)}): train its {self.baseline} first and pass its "
                    "user_norm_mean (valid metrics.json, or the report's penalty table)")
        runs = []
        for variant in self.variants:
            settings = dict(variant.set)
            if variant.name in self.tau_ratios:
                settings[TAU] = round(self.tau_ratios[variant.name] * unpenalised_norm, 6)
            for seed in seeds or (variant.seed,):
                runs.append(VariantSpec(variant.name, variant.preset, settings, seed))
        return parse_variants([run.to_json() for run in runs])  # checks the run names are unique


TAU = "objective.penalty_tau"  # the override tau_ratio resolves

def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _variant(name: str, preset: str = "baseline", **settings: Any) -> VariantSpec:
    return VariantSpec(name, preset, settings)


def _short(number: float) -> str:
    """1e-3 rather than Python's 1e-03, for names."""
    return f"{number:.0e}".replace("e-0", "e-")


def _penalty(name: str, penalty: str, strength: float) -> VariantSpec:
    return VariantSpec(name, "baseline", {"objective.penalty": penalty, "objective.penalty_lambda": strength})


# The write-up's hinge (tau 180 at an unpenalised norm of 338.6 = 0.53) and one tighter, one looser target, each at
# the write-up's lambda 1e-3 and at 1e-2.
HINGE_RATIOS = (0.35, 0.53, 0.75)
HINGE_LAMBDAS = (1e-3, 1e-2)


def _hinges() -> tuple[tuple[VariantSpec, ...], dict[str, float]]:
    variants, ratios = [], {}
    for ratio in HINGE_RATIOS:
        for strength in HINGE_LAMBDAS:
            name = f"hinge-{ratio:g}x-{_short(strength)}"
            variants.append(_penalty(name, "hinge", strength))
            ratios[name] = ratio
    return tuple(variants), ratios


HINGE_VARIANTS, HINGE_TAU_RATIOS = _hinges()

# Depth/width pairs with the baseline's non-embedding parameters (Transformer blocks + final norm: 98,624 at
# d_model 64, 2 layers) within 2% (tests/trainer/test_grids.py recounts them); n_head keeps head_dim near 32.
ASPECT_PAIRS = ((1, 90, 3), (2, 64, 2), (4, 45, 1), (8, 32, 1))  # (n_layer, d_model, n_head)

GRIDS: dict[str, Grid] = {g.name: g for g in (
    Grid("writeup-positions",
         "learned positions vs RoPE vs both (and the fixed sinusoidal table): RoPE led for 25k steps, then the "
         "learned baseline overtook it; RoPE + learned learned slower and converged",
         (_variant("baseline"), VariantSpec("rope", "rope"), VariantSpec("rope+learned", "rope-learned"),
          _variant("sinusoidal", position="sinusoidal")), DEFAULT_SEEDS),
    Grid("writeup-architecture",
         "normalization (RMSNorm: -0.7% recall, 25% faster), gated MLPs at equal parameters (SwiGLU +1.2%) and "
         "parallel vs serial blocks",
         (_variant("baseline"), VariantSpec("rmsnorm", "rmsnorm"), VariantSpec("swiglu", "swiglu"),
          VariantSpec("geglu", "geglu"), VariantSpec("parallel", "parallel")), DEFAULT_SEEDS),
    Grid("writeup-dff",
         "the MLP's hidden width d_ff as a multiple of d_model (the baseline uses 4)",
         tuple(_variant(f"dff-{ratio}x", d_ff_ratio=ratio) for ratio in (1, 2, 4, 8)), DEFAULT_SEEDS,
         baseline="dff-4x"),
    Grid("writeup-aspect",
         "depth vs width at equal non-embedding parameters (within 2% of the baseline's 98,624)",
         tuple(_variant(f"L{layers}-d{width}", n_layer=layers, d_model=width, n_head=heads)
               for layers, width, heads in ASPECT_PAIRS), DEFAULT_SEEDS, baseline="L2-d64"),
    Grid("writeup-penalty",
         "user-embedding norm penalties: L2 1e-4 kept recall with a 17% smaller norm, 5e-4 cost recall, >= 1e-2 "
         "hurt; a hinge at tau 180 (0.53 of the unpenalised norm), lambda 1e-3 held the norm near 172",
         (_variant("baseline"), *(_penalty(f"l2-{_short(s)}", "l2", s) for s in (1e-4, 5e-4, 1e-3, 1e-2)),
          *HINGE_VARIANTS), DEFAULT_SEEDS,
         tau_ratios=HINGE_TAU_RATIOS),
    Grid("writeup-schedules",
         "constant LR vs 5% warm-up + cosine to 1% (AdamW wd 0.01): comparable or slightly worse; cosine with "
         "warm restarts: strong early, finished below the baseline",
         (_variant("baseline"), VariantSpec("cosine", "cosine"), VariantSpec("warm-restarts", "warm-restarts")),
         DEFAULT_SEEDS),
    Grid("writeup-time",
         "temporal features: absolute time (baseline) vs HybridTimestampEncoding (+0.3% recall@10) vs none, and "
         "hour-of-day / day-of-week embeddings",
         (_variant("baseline"), VariantSpec("hybrid-time", "hybrid-time"), _variant("no-time", time_encoding="none"),
          _variant("calendar", calendar=True)), DEFAULT_SEEDS),
)}


def parse_grid(data: Any, source: str, default_name: str = "grid") -> Grid:
    """A grid from a file's content: a list of variants, or a mapping with ``variants:`` (and optionally ``seeds:``,
    ``baseline:``, ``name:``, ``note:``); ConfigError naming ``source`` otherwise."""
    if isinstance(data, list):
        data = {"variants": data}
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: a grid is a list of variants or a mapping with 'variants:' (and 'seeds:')")
    unknown = sorted(set(data) - set(GRID_KEYS))
    require(not unknown, source, f"unknown key {unknown[0] if unknown else ''!r}; allowed: {', '.join(GRID_KEYS)}")
    entries = data.get("variants")
    require(isinstance(entries, list) and len(entries) > 0, f"{source}: variants",
            "must be a non-empty list of presets or {name, preset, set} mappings")
    ratios = {}
    plain = []
    for entry in entries:
        if isinstance(entry, Mapping) and "tau_ratio" in entry:
            entry = dict(entry)
            ratio = entry.pop("tau_ratio")
            ratios[str(entry.get("name", entry.get("preset")))] = ratio
        plain.append(entry)
    try:
        variants = tuple(parse_variants(plain))
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None
    seeds = data.get("seeds", [])
    require(isinstance(seeds, list), f"{source}: seeds", f"must be a list of integers, got {seeds!r}")
    names = [v.name for v in variants]
    baseline = data.get("baseline") or ("baseline" if "baseline" in names else names[0])
    return Grid(str(data.get("name") or default_name), str(data.get("note") or f"from {source}"), variants,
                tuple(seeds), str(baseline), ratios)


def parameter_counts(spec: VariantSpec, num_items: int) -> tuple[int, int]:
    """(all parameters, non-embedding parameters: the Transformer blocks and the user head, i.e. the final norm and
    its scale) of ``spec``'s model for a catalogue of ``num_items`` items."""
    from trainer.job import resolve_configs
    from trainer.model import InterestModel  # torch: only when counting

    model = InterestModel(resolve_configs(spec.preset, spec.overrides())[0], num_items)
    blocks = sum(p.numel() for module in (model.blocks, model.user_head) for p in module.parameters())
    return model.num_parameters(), blocks


def load_grid(name_or_file: str) -> Grid:
    """A built-in grid by name, or a grid file (local path or object-store URI; YAML or JSON)."""
    if name_or_file in GRIDS:
        return GRIDS[name_or_file]
    from core import storage

    try:
        text = storage.read_text(name_or_file)
    except (FileNotFoundError, IsADirectoryError):
        raise ConfigError(f"--grid: {name_or_file!r} is neither a built-in grid ({', '.join(GRIDS)}) nor a grid "
                          "file") from None
    return parse_grid(safe_yaml(text, f"--grid {name_or_file}"), f"--grid {name_or_file}",
                      PurePath(name_or_file).stem)
