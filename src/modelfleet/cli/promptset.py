"""`modelfleet promptset`: make reproducible prompt sets for load tests and comparisons."""

from __future__ import annotations

import sys
from pathlib import Path

import click
import yaml

from modelfleet.bench import promptset as ps
from modelfleet.errors import ConfigError


@click.group()
def promptset() -> None:
    """Make and check promptsets: promptset.jsonl plus a manifest with token counts and checksums."""


@promptset.command()
@click.option("--packs", help=f"Comma-separated packs, optionally weighted: general-qa=2,code. Built in: "
              f"{', '.join(ps.BUILTIN_PACKS)}; or paths to pack YAML files.")  # fmt: skip
@click.option("--spec", "spec_path", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="A scenario YAML: {scenario: name, count: N, seed: S, mix: {pack: weight}}.")  # fmt: skip
@click.option("--from", "source", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Prompts from a JSONL (prompt or messages per line) or CSV (prompt column) file.")  # fmt: skip
@click.option("-n", "--count", type=click.IntRange(1), help="Number of prompts (default 100, or the file's size).")
@click.option("--seed", type=int, help="Random seed (default 0). The same seed gives the same bytes.")
@click.option("-o", "--out", type=click.Path(file_okay=False, path_type=Path), required=True, help="Output folder.")
def generate(
    packs: str | None, spec_path: Path | None, source: Path | None, count: int | None, seed: int | None, out: Path
) -> None:
    """Generate a promptset from built-in packs, a scenario file, or your own prompts.

    \b
      modelfleet promptset generate --packs general-qa,code -n 200 --seed 1 -o ./ps
      modelfleet promptset generate --from prompts.jsonl -o ./ps
      modelfleet promptset verify ./ps
    """
    if sum(x is not None for x in (packs, spec_path, source)) != 1:
        raise click.UsageError("give exactly one of --packs, --spec or --from")
    try:
        if source is not None:
            seed = 0 if seed is None else seed
            rows = ps.generate_from_file(source, count, seed)
            scenario = f"file:{source.stem}"
        else:
            if spec_path is not None:
                spec = yaml.safe_load(spec_path.read_text()) or {}
                mix = {str(k): float(v) for k, v in (spec.get("mix") or {}).items()}
                scenario = str(spec.get("scenario") or spec_path.stem)
                count = count or int(spec.get("count") or 100)
                seed = seed if seed is not None else int(spec.get("seed") or 0)
            else:
                mix = {}
                for part in (packs or "").split(","):
                    name, _, weight = part.strip().partition("=")
                    mix[name] = float(weight or 1)
                scenario = "packs:" + "+".join(mix)
            seed = 0 if seed is None else seed
            rows = ps.generate_from_packs(mix, count or 100, seed)
        manifest = ps.write(rows, out, scenario=scenario, seed=seed)
    except ConfigError as exc:
        click.echo(click.style("error: ", fg="red", bold=True) + str(exc), err=True)
        sys.exit(2)
    click.echo(
        f"wrote {manifest['count']} prompts to {out / ps.PROMPTSET_FILE} "
        f"({manifest['prompt_tokens']['total']} prompt tokens by {manifest['tokenizer']['name']}); "
        f"dataset {manifest['dataset_id']}"
    )


@promptset.command()
@click.argument("directory", type=click.Path(exists=True, file_okay=False, path_type=Path))
def verify(directory: Path) -> None:
    """Recompute checksums and counts; exit 1 if the promptset no longer matches its manifest."""
    problems = ps.verify(directory)
    if problems:
        for p in problems:
            click.echo(click.style("mismatch: ", fg="red", bold=True) + p, err=True)
        sys.exit(1)
    click.echo(f"{directory}: ok")
