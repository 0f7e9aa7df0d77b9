"""``python -m controlloop.crds [DIR]``: regenerate manifests/crds (one file per kind)."""

import sys

from controlloop.crds.schema import write_definitions

for written in write_definitions(sys.argv[1] if len(sys.argv) > 1 else "manifests/crds"):
    print(written)
