"""Copy Ray's wheel without what a training node never loads: ``ray/jars/`` (Java) and the dashboard's client build.

``python repack_ray.py IN.whl OUT.whl``; the RECORD drops the removed files, so pip installs the result as usual.
"""

from __future__ import annotations

import sys
import zipfile

DROP = ("ray/jars/", "ray/dashboard/client/build/")


def repack(src: str, dst: str) -> None:
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w", zipfile.ZIP_DEFLATED, compresslevel=6) as zout:
        for info in zin.infolist():
            if info.filename.startswith(DROP):
                continue
            data = zin.read(info)
            if info.filename.endswith(".dist-info/RECORD"):
                lines = data.decode().splitlines(keepends=True)
                data = "".join(line for line in lines if not line.startswith(DROP)).encode()
            zout.writestr(info, data)


if __name__ == "__main__":
    repack(sys.argv[1], sys.argv[2])
