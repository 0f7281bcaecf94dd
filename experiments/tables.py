"""The README's result tables, written from committed JSON (never by hand).

    python experiments/tables.py            # rewrites every block below in README.md
    python experiments/tables.py --check    # exit 1, naming the block, if README.md differs from its JSON

A block is the text between `<!-- NAME table -->` and `<!-- /NAME table -->`; BLOCKS says which JSON and which
`table` function write it (the experiment's or benchmark's own).
"""

import argparse
import json
import os
import re
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "experiments"))

import demos  # pylint: disable=g-import-not-at-top,wrong-import-position
from benchmarks import step  # pylint: disable=g-import-not-at-top,wrong-import-position

BLOCKS = {  # name -> (JSON under the repo, its table function)
    "demos_v40": ("results/demos_v40.json", lambda doc: demos.table(doc["results"])),
    "train_step": ("results/train_step.json", step.table),
}


def render(text: str, root: str = ROOT) -> str:
  """`text` (a README) with every known block rewritten from its JSON; unknown or missing blocks are errors."""
  for name, (path, table) in BLOCKS.items():
    pattern = re.compile(rf"(<!-- {name} table -->\n)(.*?)(<!-- /{name} table -->)", re.S)
    if not pattern.search(text):
      raise ValueError(f"README has no '<!-- {name} table -->' ... '<!-- /{name} table -->' block ({path})")
    with open(os.path.join(root, path)) as f:
      body = table(json.load(f)).rstrip("\n") + "\n"
    text = pattern.sub(lambda m, body=body: m.group(1) + body + m.group(3), text)
  return text


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("readme", nargs="?", default=os.path.join(ROOT, "README.md"))
  p.add_argument("--check", action="store_true", help="only check that the README matches its JSON")
  args = p.parse_args(argv)
  with open(args.readme) as f:
    text = f.read()
  new = render(text)
  if args.check:
    if new != text:
      stale = [n for n in BLOCKS if re.search(rf"<!-- {n} table -->\n(.*?)<!-- /{n} table -->", text, re.S).group(1)
               != re.search(rf"<!-- {n} table -->\n(.*?)<!-- /{n} table -->", new, re.S).group(1)]
      print(f"{args.readme}: tables out of date with their JSON: {stale} (run python experiments/tables.py)")
      return 1
    return 0
  if new != text:
    with open(args.readme, "w") as f:
      f.write(new)
  return 0


if __name__ == "__main__":
  sys.exit(main())
