"""Writing a rendered folder: only what changed is rewritten, and files an earlier render wrote but this
one no longer does (say schedules.tf, once the gateway moves to AWS) are removed. Terraform's own files
(.terraform/, state, plans) are never touched."""

from __future__ import annotations

from pathlib import Path

MANIFEST = ".modelfleet-rendered"


def write(files: dict[str, bytes], out: Path) -> list[str]:
    """Write `files` under `out`; returns the paths that changed (written or removed)."""
    for name in files:  # renderers name files from the fleet file: none may land outside `out`
        if Path(name).is_absolute() or ".." in Path(name).parts:
            raise ValueError(f"refusing to write {name!r} outside {out}/")
    out.mkdir(parents=True, exist_ok=True)
    changed = []
    manifest = out / MANIFEST
    before = set(manifest.read_text().split()) if manifest.exists() else set()
    before = {n for n in before if not Path(n).is_absolute() and ".." not in Path(n).parts}  # an edited manifest
    for stale in sorted(before - set(files)):
        path = out / stale
        if path.is_file():
            path.unlink()
            changed.append(stale)
            if path.parent != out and not any(path.parent.iterdir()):
                path.parent.rmdir()
    for name, data in sorted(files.items()):
        path = out / name
        if path.is_file() and path.read_bytes() == data:
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        changed.append(name)
    manifest.write_text("".join(f"{name}\n" for name in sorted(files)))
    return changed
