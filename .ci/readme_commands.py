"""Print the commands of README.md's ```bash blocks, one per line (CI runs each of them).

README.md tags blocks that run in under a minute on a 2-core CPU, offline, as ```bash; blocks that
are only shown (long runs, data outside the repository, the set-up block) are ```sh.
"""

import pathlib
import sys

lines, inside = [], False
for line in pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else "README.md").read_text().splitlines():
    stripped = line.strip()
    if stripped.startswith("```"):
        inside = not inside and stripped == "```bash"
        continue
    if inside and stripped and not stripped.startswith("#"):
        lines.append(stripped)
if not lines:
    sys.exit("README.md has no ```bash block: nothing for CI to run")
print("\n".join(lines))
