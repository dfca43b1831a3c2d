# runbox: run by every Python start in this image (Debian's own, which looked for apport, is
# replaced). It must cost a plain hello world nothing measurable: no imports beyond `os` and
# `sys`, which Python has loaded already, and it leaves a program's environment as the
# sandbox made it (numpy uses Debian's reference BLAS, single-threaded: no thread count to
# set). Only a program that imports matplotlib gets MPLCONFIGDIR.
import os
import sys


class _MatplotlibCache:
    """On the first `import matplotlib`: a writable config dir, seeded with the font list
    built into the image. matplotlib refuses a read-only config dir (it makes a temporary one,
    warns on stderr and scans every font again, ~1 s), and the work dir is the user's: the
    dir is made in /dev/shm, fresh per job."""

    seed = "/usr/local/share/runbox/matplotlib"
    target = "/dev/shm/matplotlib"

    def find_spec(self, name, path=None, target=None):
        if name != "matplotlib":
            return None
        sys.meta_path.remove(self)
        if "MPLCONFIGDIR" not in os.environ:
            try:
                os.makedirs(self.target, exist_ok=True)
                for entry in os.listdir(self.seed):
                    copy = os.path.join(self.target, entry)
                    if not os.path.exists(copy):
                        with open(os.path.join(self.seed, entry), "rb") as source:
                            data = source.read()
                        with open(copy, "wb") as sink:
                            sink.write(data)
                os.environ["MPLCONFIGDIR"] = self.target
            except OSError:
                pass
        return None


sys.meta_path.insert(0, _MatplotlibCache())
