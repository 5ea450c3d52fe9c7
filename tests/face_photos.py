"""Real photos for face-detector tests and benchmarks, all from installed packages (nothing committed).

Faces come from scikit-image's data module: ``astronaut()`` (Eileen Collins, a portrait) and
``camera()`` (the cameraman). From each we build ordinary portraits (the photo rescaled, rotated,
greyscale, JPEG-compressed, mirrored, darker, placed off-centre on a large canvas) and tight face
crops (the face plus a small margin, as in age-estimation datasets, with the same kinds of
variants). Photos without faces: skimage's coffee, chelsea (a cat), rocket, moon, coins, the Hubble
deep field, ... and scikit-learn's ``china.jpg`` / ``flower.jpg``.

Each face sample is ``(name, image, centre, size)``: where the face centre is (pixels) and its
rough side, so a detection counts only when a box lands on the face (:func:`hit`).
"""

from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np
from PIL import Image, ImageEnhance, ImageOps

# hand-checked face boxes (x0, y0, x1, y1) in the 512 x 512 originals
FACE_BOXES = {"astronaut": (172, 55, 272, 180), "camera": (190, 105, 258, 195)}
NO_FACE_NAMES = ("coffee", "chelsea", "rocket", "moon", "coins", "hubble_deep_field", "immunohistochemistry",
                 "text", "brick", "grass", "gravel", "page", "clock", "retina", "cell", "colorwheel")


def _skimage(name: str) -> Image.Image:
    import skimage.data

    arr = getattr(skimage.data, name)()
    if isinstance(arr, tuple):
        arr = arr[0]
    if arr.dtype == bool:
        arr = arr.astype(np.uint8) * 255
    return Image.fromarray(arr).convert("RGB")


def photo(name: str) -> Image.Image:
    """One skimage photo as an RGB PIL image."""
    return _skimage(name)


def jpeg(image: Image.Image, quality: int) -> Image.Image:
    buf = io.BytesIO()
    image.convert("RGB").save(buf, format="JPEG", quality=quality)
    return Image.open(io.BytesIO(buf.getvalue())).convert("RGB")


def _rotate(image: Image.Image, centre, degrees: float):
    """Rotate about the image centre (expanding the canvas); returns the image and the moved point."""
    out = image.rotate(degrees, resample=Image.BICUBIC, expand=True, fillcolor=(128, 128, 128))
    cx, cy = image.width / 2, image.height / 2
    a = math.radians(degrees)  # PIL rotates counter-clockwise
    dx, dy = centre[0] - cx, centre[1] - cy
    x, y = dx * math.cos(a) + dy * math.sin(a), -dx * math.sin(a) + dy * math.cos(a)
    return out, (x + out.width / 2, y + out.height / 2)


def _variants(tag: str, image: Image.Image, centre, size: float):
    """The same face, changed as uploads are: scale, rotation, grey, JPEG, mirror, light."""
    w, h = image.size
    yield f"{tag}", image, centre, size
    for factor in (0.5, 2.0):
        scaled = image.resize((round(w * factor), round(h * factor)), Image.BICUBIC)
        yield f"{tag}-x{factor:g}", scaled, (centre[0] * factor, centre[1] * factor), size * factor
    for deg in (-15, 15):
        rotated, moved = _rotate(image, centre, deg)
        yield f"{tag}-rot{deg}", rotated, moved, size
    yield f"{tag}-grey", ImageOps.grayscale(image).convert("RGB"), centre, size
    yield f"{tag}-jpeg15", jpeg(image, 15), centre, size
    yield f"{tag}-mirror", ImageOps.mirror(image), (w - centre[0], centre[1]), size
    yield f"{tag}-dark", ImageEnhance.Brightness(image).enhance(0.55), centre, size
    yield f"{tag}-contrast", ImageEnhance.Contrast(image).enhance(0.6), centre, size


def tight_crop(name: str, margin: float = 0.15, side: int = 224) -> Image.Image:
    """The face of skimage photo ``name`` plus ``margin`` x its size on each side, resized to ``side``."""
    x0, y0, x1, y1 = FACE_BOXES[name]
    s = max(x1 - x0, y1 - y0) * (1 + 2 * margin)
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    box = (round(cx - s / 2), round(cy - s / 2), round(cx + s / 2), round(cy + s / 2))
    return photo(name).crop(box).resize((side, side), Image.BICUBIC)


def portraits():
    """Ordinary portraits: the two photos and their variants, plus each on a large canvas."""
    out = []
    for name, (x0, y0, x1, y1) in FACE_BOXES.items():
        image = photo(name)
        centre, size = ((x0 + x1) / 2, (y0 + y1) / 2), max(x1 - x0, y1 - y0)
        out += list(_variants(f"{name}-portrait", image, centre, size))
        canvas = Image.new("RGB", (1600, 1200), (200, 205, 210))
        canvas.paste(image, (900, 100))
        out.append((f"{name}-on-canvas", canvas, (centre[0] + 900, centre[1] + 100), size))
    return out


def tight_crops():
    """Tight face crops (margins 0.05 to 0.3, 224 and 112 px) and their variants."""
    out = []
    for name in FACE_BOXES:
        for margin in (0.05, 0.3):
            image = tight_crop(name, margin)
            c = image.width / 2
            out += list(_variants(f"{name}-crop{margin:g}", image, (c, c), image.width / (1 + 2 * margin)))
        small = tight_crop(name, 0.15, side=112)
        out.append((f"{name}-crop-112", small, (56, 56), 112 / 1.3))
    return out


def no_faces():
    """Photos without a (human) face: ``(name, image)``."""
    out = [(name, photo(name)) for name in NO_FACE_NAMES]
    out.append(("stereo_motorcycle", photo("stereo_motorcycle")))
    import sklearn.datasets

    folder = Path(sklearn.datasets.__file__).parent / "images"
    out += [(p.stem, Image.open(p).convert("RGB")) for p in sorted(folder.glob("*.jpg"))]
    return out


def hit(boxes, centre, size: float) -> bool:
    """Whether one of ``boxes`` is centred on the face (within half its size) and of a plausible size."""
    for x0, y0, x1, y1 in boxes:
        bx, by = (x0 + x1) / 2, (y0 + y1) / 2
        side = max(x1 - x0, y1 - y0)
        if math.hypot(bx - centre[0], by - centre[1]) <= 0.5 * size and 0.4 * size <= side <= 2.5 * size:
            return True
    return False


def two_faces(side: int = 300, gap: int = 80) -> tuple[Image.Image, list]:
    """Two tight face crops (astronaut left, larger; cameraman right) side by side on a grey canvas,
    with their centres."""
    left = tight_crop("astronaut", 0.3, side)
    right = tight_crop("camera", 0.3, round(side * 0.8))
    canvas = Image.new("RGB", (gap * 3 + left.width + right.width, side + 2 * gap), (120, 120, 120))
    canvas.paste(left, (gap, gap))
    rx = gap * 2 + left.width
    canvas.paste(right, (rx, gap + (side - right.height) // 2))
    return canvas, [(gap + side / 2, gap + side / 2), (rx + right.width / 2, gap + side / 2)]


SCENE_FACE_LABELS = [2, 4, 6, 8, 3, 5]  # write_scene_dataset: one scene per label, a face pasted in each


def face_scene(i: int) -> Image.Image:
    """A 480 x 360 brick scene with the astronaut's (even i) or cameraman's face pasted where i says."""
    scene = photo("brick").resize((480, 360))
    face = tight_crop("astronaut" if i % 2 == 0 else "camera", margin=0.3, side=150)
    scene.paste(face, (20 + 50 * i, 30 + 25 * (i % 4)))
    return scene


def write_scene_dataset(root: Path) -> Path:
    """``root/data.csv`` (path,label,split): 6 scenes with a face (labels SCENE_FACE_LABELS) and two
    photos without one (coffee 7, rocket 9); 5 train, 2 val, 1 test. Returns the CSV's path."""
    rows = []
    splits = ["train"] * 4 + ["val", "test"]
    for i, label in enumerate(SCENE_FACE_LABELS):
        face_scene(i).save(root / f"face{i}.png")
        rows.append(f"face{i}.png,{label},{splits[i]}")
    for name, label, split in (("coffee", 7, "train"), ("rocket", 9, "val")):
        photo(name).resize((400, 300)).save(root / f"{name}.jpg", quality=92)
        rows.append(f"{name}.jpg,{label},{split}")
    (root / "data.csv").write_text("path,label,split\n" + "\n".join(rows) + "\n")
    return root / "data.csv"
