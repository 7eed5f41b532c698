"""One light task of the hand-written MLflow chain, run as ``python light.py STEP``:
it does nothing."""
import sys

step = sys.argv[1]
