"""Render the Noto Color Emoji dataset into data/cache/ and report what was built.

python scripts/build_emoji.py --sizes 64 128
"""

import argparse
import hashlib
import time

import numpy as np

from workbench.data.emoji import EMOJI_GROUPS, emoji_arrays


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 128], help="image sides to render")
    args = parser.parse_args()
    for size in args.sizes:
        start = time.perf_counter()
        images, labels, _ = emoji_arrays(size)
        seconds = time.perf_counter() - start
        per_label = np.bincount(labels, minlength=len(EMOJI_GROUPS))
        counts = ", ".join(f"{name} {n}" for (_, name), n in zip(EMOJI_GROUPS, per_label))
        print(
            f"{size}x{size}: {len(images)} glyphs in {seconds:.2f} s; "
            f"sha256 {hashlib.sha256(images.tobytes()).hexdigest()[:16]}; {counts}"
        )


if __name__ == "__main__":
    main()
