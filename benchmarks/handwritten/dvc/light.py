"""One light task of the chain, run by its DVC stage as ``python light.py NAME``:
it writes its out, ``out/NAME.txt``, which the next stage depends on."""
import sys
from pathlib import Path

name = sys.argv[1]
Path("out").mkdir(exist_ok=True)
Path("out", f"{name}.txt").write_text(f"{name} done\n")
