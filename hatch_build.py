"""Builds the web inspector into the package when a wheel (or an editable install) is built:
`npm ci` and `npm run build` in inspector/, writing agentstream/inspector/static. Without Node
the install goes on, and the server's /inspector/ page says how to build it later."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from hatchling.builders.hooks.plugin.interface import BuildHookInterface


class InspectorBuild(BuildHookInterface):  # type: ignore[type-arg]
    PLUGIN_NAME = "custom"

    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
        root = Path(self.root)
        sources = root / "inspector"
        if (root / "agentstream" / "inspector" / "static" / "index.html").exists():
            return
        if not (sources / "package.json").exists():
            return  # an sdist without the sources: nothing to build
        npm = shutil.which("npm")
        if npm is None:
            print("agentstream: no npm here; /inspector/ will say how to build it", file=sys.stderr)
            return
        try:
            if not (sources / "node_modules").is_dir():
                subprocess.run([npm, "ci", "--no-audit", "--no-fund"], cwd=sources, check=True)
            subprocess.run([npm, "run", "build"], cwd=sources, check=True)
        except (OSError, subprocess.CalledProcessError) as exc:
            print(f"agentstream: the inspector was not built ({exc})", file=sys.stderr)
