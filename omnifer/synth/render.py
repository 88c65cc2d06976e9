"""Procedural renderer: faces driven by action-unit intensities, and non-face distractors.

numpy + Pillow only. A face is drawn at twice the output size in a canonical frame, warped
by a pose transform, reduced to the output size, then degraded (occlusion, blur, lighting,
noise) and JPEG-encoded by the caller. All randomness comes from the ``Generator`` passed in.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from omnifer.synth.faces import AU_INDEX, FIELD_INDEX as F

_A = AU_INDEX


@dataclass(frozen=True)
class RenderParams:
    """Nuisance factors of the renderer (a subset of the generator config)."""

    roll_deg: float = 12.0
    yaw: float = 0.6  # yaw-like feature shift, in [-yaw, yaw]
    scale_jitter: float = 0.12
    shift: float = 0.07  # fraction of the image size
    light_strength: float = 0.45
    light_tint: float = 0.0  # coloured light (domain shift)
    noise_max: float = 12.0  # gaussian noise sigma in grey levels
    blur_max: float = 1.0  # gaussian blur radius in output pixels
    occlusion_prob: float = 0.1
    background_clutter: float = 0.5


def _u(lo: float, hi: float, r: float) -> float:
    return lo + (hi - lo) * r


def _rgb(row: np.ndarray, start: str, scale: float = 1.0, add: float = 0.0) -> tuple:
    i = F[start]
    return tuple(int(max(0, min(255, row[i + k] * scale + add))) for k in range(3))


def _curve(x0, y0, x1, y1, xc, yc, n=6):
    """Points of a quadratic Bezier from (x0, y0) to (x1, y1) with control (xc, yc)."""
    pts = []
    for k in range(n + 1):
        t = k / n
        a, b, c = (1 - t) ** 2, 2 * (1 - t) * t, t * t
        pts.append((a * x0 + b * xc + c * x1, a * y0 + b * yc + c * y1))
    return pts


def _background(rng: np.random.Generator, c: int, clutter: float) -> Image.Image:
    grid = (rng.random((3, 3, 3)) * 200 + 30).astype(np.uint8)
    small = Image.fromarray(grid, "RGB").resize((max(4, c // 4),) * 2, Image.BILINEAR)
    bg = small.resize((c, c), Image.NEAREST)
    if clutter > 0 and rng.random() < clutter:
        d = ImageDraw.Draw(bg)
        for _ in range(int(rng.integers(1, 4))):
            x0, y0 = rng.random(2) * c
            w, h = (0.1 + 0.4 * rng.random(2)) * c
            col = tuple(int(v) for v in rng.integers(20, 236, 3))
            if rng.random() < 0.5:
                d.rectangle((x0, y0, x0 + w, y0 + h), fill=col)
            else:
                d.ellipse((x0, y0, x0 + w, y0 + h), fill=col)
    return bg


def draw_face(
    rng: np.random.Generator, ident: np.ndarray, au: np.ndarray, canvas: int, p: RenderParams,
) -> tuple[Image.Image, tuple]:
    """Draw a frontal face on a background at ``canvas`` pixels; return (image, fill colour)."""
    C = float(canvas)
    bg = _background(rng, canvas, p.background_clutter)
    fill = bg.getpixel((0, 0))
    d = ImageDraw.Draw(bg)
    r = rng.random(16)

    def X(v):  # unit -> px
        return v * C

    a = {name: float(au[i]) for name, i in _A.items()}
    yaw = p.yaw * (2 * r[0] - 1)
    skin = _rgb(ident, "skin_r")
    skin_dark = _rgb(ident, "skin_r", 0.78)
    line = _rgb(ident, "skin_r", 0.45)
    hair = _rgb(ident, "hair_r")
    fw, fh = ident[F["face_w"]] / 2, ident[F["face_h"]] / 2
    cy = ident[F["face_cy"]]
    cx = 0.5 + 0.025 * yaw
    squeeze = 1 - 0.1 * abs(yaw)

    def fx(dx):  # feature x from an offset relative to the face midline
        return cx + dx * squeeze + 0.05 * yaw

    jaw = 0.035 * a["AU26"]
    style = int(ident[F["hair_style"]])
    hl = ident[F["hair_len"]]
    # Clothes / shoulders and neck.
    d.ellipse((X(cx - 0.42), X(cy + fh + 0.05), X(cx + 0.42), X(cy + fh + 0.6)),
              fill=_rgb(ident, "cloth_r"))
    d.rectangle((X(cx - fw * 0.45), X(cy + fh * 0.6), X(cx + fw * 0.45), X(cy + fh + 0.12)),
                fill=skin_dark)
    # Long hair behind the head.
    if style == 3:
        d.rounded_rectangle(
            (X(cx - fw - 0.05), X(cy - fh - 0.04), X(cx + fw + 0.05),
             X(cy + fh * (0.3 + 0.8 * hl) + 0.05)),
            radius=X(0.12), fill=hair)
    # Ears.
    er = ident[F["ear"]]
    ey_ear = cy - 0.01
    for s in (-1, 1):
        ex = cx + s * fw * (1 - 0.05 * s * yaw)
        d.ellipse((X(ex - er * 0.6), X(ey_ear - er), X(ex + er * 0.6), X(ey_ear + er)), fill=skin_dark)
    # Head.
    d.ellipse((X(cx - fw), X(cy - fh), X(cx + fw), X(cy + fh + jaw)), fill=skin)
    # Hair on top: a chord of the head ellipse above the hairline.
    if style != 0:
        cut = {1: 36, 2: 26, 3: 32, 4: 32}[style]
        box = (X(cx - fw - 0.012), X(cy - fh - 0.035), X(cx + fw + 0.012), X(cy + fh))
        d.chord(box, 180 + cut, 360 - cut, fill=hair)
        if style == 4:  # side part
            d.polygon([(X(cx - fw), X(cy - fh * 0.3)), (X(cx + 0.02), X(cy - fh - 0.02)),
                       (X(cx - fw * 0.3), X(cy - fh * 0.62))], fill=hair)
        elif style == 3:  # long hair framing the face
            for sgn in (-1, 1):
                d.rectangle((X(cx + sgn * fw - 0.025), X(cy - fh * 0.5), X(cx + sgn * fw + 0.025),
                             X(cy + fh * 0.4 * hl)), fill=hair)
    ex_d = ident[F["eye_dx"]]
    eye_y = cy + ident[F["eye_y"]]
    ew, eh0 = ident[F["eye_w"]], ident[F["eye_h"]]
    mouth_y = cy + ident[F["mouth_y"]] + 0.3 * jaw
    nose_y = eye_y + ident[F["nose_len"]] - 0.012 * a["AU9"]
    # Beard (under the mouth drawing).
    beard = int(ident[F["beard"]])
    if beard == 2:
        d.chord((X(cx - fw * 0.98), X(cy + fh * 0.05), X(cx + fw * 0.98), X(cy + fh + jaw + 0.01)),
                15, 165, fill=hair)
    # Cheek raise (AU6): raised, shaded cheek apples.
    if a["AU6"] > 0.05:
        k = a["AU6"]
        cheek = tuple(int(skin[i] * (1 - 0.12 * k) + (30 * k if i == 0 else 0)) for i in range(3))
        for s in (-1, 1):
            ccx = fx(s * (ex_d + 0.01))
            ccy = eye_y + 0.085 - 0.03 * k
            rr = 0.05 + 0.015 * k
            d.ellipse((X(ccx - rr), X(ccy - rr * 0.7), X(ccx + rr), X(ccy + rr * 0.7)), fill=cheek)
    # Nasolabial folds (AU12, AU9, AU10, AU6).
    fold = max(a["AU12"], 0.8 * a["AU9"], 0.6 * a["AU10"], 0.5 * a["AU6"])
    if fold > 0.1:
        for s in (-1, 1):
            x0, y0 = fx(s * (ident[F["nose_w"]] + 0.012)), nose_y - 0.01
            x1 = fx(s * (ident[F["mouth_w"]] + 0.02 + 0.02 * a["AU12"]))
            y1 = mouth_y + 0.02 - 0.02 * a["AU12"]
            d.line(_curve(X(x0), X(y0), X(x1), X(y1), X(x1 + s * 0.01), X((y0 + y1) / 2), 4),
                   fill=skin_dark, width=max(1, int(X(0.004 + 0.008 * fold))))
    # Eyes.
    eh = eh0 * (1 + 0.9 * a["AU5"] - 0.55 * a["AU7"] - 0.35 * a["AU6"] - 0.25 * a["AU9"])
    eh = max(eh, eh0 * 0.18)
    lower_lift = 0.35 * a["AU7"] + 0.35 * a["AU6"]
    iris_col = _rgb(ident, "iris_r")
    for s in (-1, 1):
        ex = fx(s * ex_d)
        top, bot = eye_y - eh, eye_y + eh * (1 - 0.5 * lower_lift)
        d.ellipse((X(ex - ew), X(top), X(ex + ew), X(bot)), fill=(245, 245, 240))
        ir = min(eh0 * 0.95, (bot - top) / 2)
        icx = ex + 0.006 * yaw
        icy = (top + bot) / 2 if a["AU5"] < 0.3 else eye_y + eh0 * 0.15
        d.ellipse((X(icx - ir), X(icy - ir), X(icx + ir), X(icy + ir)), fill=iris_col)
        pr = ir * 0.45
        d.ellipse((X(icx - pr), X(icy - pr), X(icx + pr), X(icy + pr)), fill=(10, 10, 10))
        lw = max(1, int(X(0.006)))
        d.arc((X(ex - ew), X(top), X(ex + ew), X(bot)), 180, 360, fill=(30, 20, 20), width=lw)
        if lower_lift > 0.1:
            d.arc((X(ex - ew), X(top), X(ex + ew), X(bot)), 10, 170, fill=line,
                  width=max(1, int(X(0.003 + 0.008 * lower_lift))))
        if a["AU6"] > 0.25:  # crow's feet
            ox = ex + s * (ew + 0.008)
            for k in (-1, 0, 1):
                d.line((X(ox), X(eye_y + k * 0.01), X(ox + s * 0.022 * a["AU6"]),
                        X(eye_y + k * 0.018)), fill=line, width=max(1, int(X(0.004))))
    # Brows.
    bth = ident[F["brow_th"]]
    blen = ident[F["brow_len"]]
    bgap = ident[F["brow_gap"]]
    slant = ident[F["brow_slant"]]
    arch = ident[F["brow_arch"]]
    brow_col = _rgb(ident, "hair_r", 0.8)
    base = eye_y - bgap - 0.01 * (eh0 / 0.026 - 1)
    inner_y = base + slant - 0.055 * a["AU1"] + 0.035 * a["AU4"] + 0.012 * a["AU9"]
    outer_y = base - slant - 0.05 * a["AU2"] + 0.008 * a["AU4"] + 0.006 * a["AU9"]
    inner_x = ex_d - blen * 0.55 - 0.018 * a["AU4"]
    outer_x = ex_d + blen * 0.5
    arch_k = arch + 0.02 * a["AU2"] - 0.012 * a["AU4"] + 0.012 * a["AU1"] * (1 - a["AU2"])
    for s in (-1, 1):
        x0, x1 = fx(s * inner_x), fx(s * outer_x)
        xm, ym = (x0 + x1) / 2, (inner_y + outer_y) / 2 - arch_k
        top = _curve(X(x0), X(inner_y - bth / 2), X(x1), X(outer_y - bth * 0.3), X(xm), X(ym - bth / 2), 5)
        bot = _curve(X(x1), X(outer_y + bth * 0.2), X(x0), X(inner_y + bth / 2), X(xm), X(ym + bth / 2), 5)
        d.polygon(top + bot, fill=brow_col)
    if a["AU4"] > 0.2:  # glabella furrows
        for s in (-1, 1):
            xx = fx(s * 0.012)
            d.line((X(xx), X(inner_y - 0.005), X(xx + s * 0.004), X(inner_y + 0.03 * a["AU4"])),
                   fill=line, width=max(1, int(X(0.003 + 0.004 * a["AU4"]))))
    # Nose.
    nw = ident[F["nose_w"]] * (1 + 0.25 * a["AU9"])
    nlw = max(1, int(X(0.005)))
    d.line((X(fx(0.012)), X(eye_y + 0.01), X(fx(0.016)), X(nose_y - 0.02)), fill=skin_dark, width=nlw)
    d.arc((X(fx(-nw)), X(nose_y - 0.03), X(fx(nw)), X(nose_y + 0.012)), 20, 160, fill=line, width=nlw)
    for s in (-1, 1):
        nx = fx(s * nw * 0.5)
        d.ellipse((X(nx - 0.01), X(nose_y - 0.006), X(nx + 0.01), X(nose_y + 0.004)), fill=line)
    if a["AU9"] > 0.15:  # nose wrinkles
        for k in range(3):
            yy = eye_y + 0.015 + 0.014 * k
            w = 0.018 + 0.01 * a["AU9"]
            d.line((X(fx(-w)), X(yy), X(fx(w)), X(yy - 0.004)), fill=line,
                   width=max(1, int(X(0.003 + 0.004 * a["AU9"]))))
    # Mouth.
    mw = ident[F["mouth_w"]] * (1 + 0.35 * a["AU20"] + 0.2 * a["AU12"] - 0.25 * a["AU23"]
                                - 0.22 * a["AU26"] * (1 - a["AU20"]))
    corner = (ident[F["mouth_curve"]] - 0.04 * a["AU12"] + 0.035 * a["AU15"] + 0.006 * a["AU20"])
    lip = ident[F["lip_th"]] * (1 - 0.65 * a["AU23"])
    up_raise = 0.018 * a["AU10"]
    gap = 0.085 * a["AU26"] + 0.02 * a["AU20"] * a["AU26"] + 0.012 * a["AU10"] + 0.01 * max(0, a["AU12"] - 0.6)
    lip_col = _rgb(ident, "lip_r")
    n = 8
    ss = [-1 + 2 * k / n for k in range(n + 1)]

    def mline(s):
        return mouth_y + corner * s * s

    upper_in = [(X(fx(s * mw)), X(mline(s) - up_raise * (1 - s * s))) for s in ss]
    upper_out = [(X(fx(s * mw)), X(mline(s) - up_raise * (1 - s * s) - lip * (1 - s * s) ** 0.5
                                    - 0.004 * (1 - abs(s)))) for s in ss]
    lower_in = [(X(fx(s * mw)), X(mline(s) + gap * (1 - s * s) ** 0.8)) for s in ss]
    lower_out = [(X(fx(s * mw)), X(mline(s) + gap * (1 - s * s) ** 0.8 + lip * 1.25 * (1 - s * s) ** 0.5))
                 for s in ss]
    if beard == 1:  # moustache
        d.polygon(upper_out[1:-1] + [(x, y - X(0.02)) for x, y in reversed(upper_out[1:-1])], fill=hair)
    d.polygon(upper_out + list(reversed(upper_in)), fill=lip_col)
    if gap > 0.006:
        d.polygon(upper_in + list(reversed(lower_in)), fill=(60, 15, 20))
        teeth = min(gap * 0.45, 0.02)
        d.polygon(upper_in[1:-1] + [(x, y + X(teeth)) for x, y in reversed(upper_in[1:-1])],
                  fill=(235, 235, 225))
    d.polygon(lower_in + list(reversed(lower_out)), fill=lip_col)
    d.line(upper_in if gap <= 0.006 else lower_in, fill=(70, 30, 30), width=max(1, int(X(0.004))))
    # Glasses.
    if ident[F["glasses"]] > 0.5:
        gcol = _rgb(ident, "glasses_r")
        gw = max(1, int(X(0.006)))
        gr = ew + 0.02
        for s in (-1, 1):
            gx = fx(s * ex_d)
            d.rounded_rectangle((X(gx - gr), X(eye_y - 0.04), X(gx + gr), X(eye_y + 0.035)),
                                radius=X(0.02), outline=gcol, width=gw)
            d.line((X(gx + s * gr), X(eye_y - 0.02), X(cx + s * fw), X(eye_y - 0.025)), fill=gcol, width=gw)
        d.line((X(fx(-ex_d + gr)), X(eye_y - 0.015), X(fx(ex_d - gr)), X(eye_y - 0.015)), fill=gcol, width=gw)
    return bg, fill


def _pose(img: Image.Image, rng: np.random.Generator, p: RenderParams, fill: tuple) -> Image.Image:
    c = img.size[0]
    r = rng.random(4)
    ang = math.radians(p.roll_deg * (2 * r[0] - 1))
    scale = 1 + p.scale_jitter * (2 * r[1] - 1)
    tx, ty = p.shift * c * (2 * r[2] - 1), p.shift * c * (2 * r[3] - 1)
    # Inverse map: output (x, y) -> input. Rotate/scale about the centre, then shift.
    cos, sin = math.cos(ang) / scale, math.sin(ang) / scale
    h = c / 2
    ox, oy = h + tx, h + ty
    coeffs = (cos, sin, h - cos * ox - sin * oy, -sin, cos, h + sin * ox - cos * oy)
    return img.transform((c, c), Image.AFFINE, coeffs, resample=Image.NEAREST, fillcolor=fill)


def _occlude(img: Image.Image, rng: np.random.Generator, heavy: bool) -> None:
    s = img.size[0]
    d = ImageDraw.Draw(img)
    r = rng.random(6)
    col = tuple(int(v) for v in rng.integers(10, 246, 3))
    if heavy:  # covers most of the face
        w, h = (0.55 + 0.3 * r[0]) * s, (0.45 + 0.3 * r[1]) * s
    else:
        w, h = (0.2 + 0.25 * r[0]) * s, (0.15 + 0.2 * r[1]) * s
    x0 = (0.15 + 0.7 * r[2]) * s - w / 2
    y0 = (0.2 + 0.65 * r[3]) * s - h / 2
    if r[4] < 0.5:
        d.rectangle((x0, y0, x0 + w, y0 + h), fill=col)
    else:
        d.ellipse((x0, y0, x0 + w, y0 + h), fill=col)


_NOISE: dict[int, np.ndarray] = {}


def _noise_tile(s: int) -> np.ndarray:
    """A fixed standard-normal tile (same for every run) from which noise crops are taken."""
    tile = _NOISE.get(s)
    if tile is None:
        gen = np.random.default_rng(np.random.SeedSequence(20240611))
        tile = gen.standard_normal((2 * s, 2 * s, 3), dtype=np.float32)
        _NOISE[s] = tile
    return tile


def _degrade(img: Image.Image, rng: np.random.Generator, p: RenderParams) -> Image.Image:
    r = rng.random(6)
    radius = float(p.blur_max * r[0] ** 2)
    if radius > 0.3:
        img = img.filter(ImageFilter.BoxBlur(radius))
    s = img.size[0]
    # Lighting: ambient level and a linear gradient in a random direction, optional tint.
    theta = 2 * math.pi * float(r[1])
    g = _ramp(s)
    amb = 0.75 + 0.45 * float(r[2])
    k = amb * p.light_strength * float(r[3])
    light = (g[None, :] * np.float32(k * math.cos(theta)) + g[:, None] * np.float32(k * math.sin(theta))
             + np.float32(amb))[:, :, None]
    if p.light_tint > 0:
        tint = (1 + p.light_tint * (rng.random(3) - 0.5)).astype(np.float32)
        light = light * tint[None, None, :]
    arr = np.asarray(img).astype(np.float32)
    arr *= light
    sigma = p.noise_max * float(r[4])
    if sigma > 0.5:
        tile = _noise_tile(s)
        oy, ox = (int(v) for v in rng.integers(0, tile.shape[0] - s + 1, 2))
        arr += tile[oy:oy + s, ox:ox + s] * np.float32(sigma)
    np.maximum(arr, 0, out=arr)
    np.minimum(arr, 255, out=arr)
    return Image.fromarray(arr.astype(np.uint8), "RGB")


_RAMP: dict[int, np.ndarray] = {}


def _ramp(s: int) -> np.ndarray:
    ramp = _RAMP.get(s)
    if ramp is None:
        ramp = _RAMP[s] = np.linspace(-1.0, 1.0, s, dtype=np.float32)
    return ramp


def render_face(
    rng: np.random.Generator, ident: np.ndarray, au: np.ndarray, size: int, p: RenderParams,
    *, occlusion: str = "random",
) -> Image.Image:
    """Render one face (PIL RGB image of ``size`` x ``size``), before JPEG encoding.

    ``occlusion`` is ``"random"`` (partial occlusion with ``p.occlusion_prob``), ``"none"`` or
    ``"heavy"``.
    """
    canvas, fill = draw_face(rng, ident, au, 2 * size, p)
    canvas = _pose(canvas, rng, p, fill)
    img = canvas.reduce(2)
    if occlusion == "heavy":
        _occlude(img, rng, heavy=True)
    elif occlusion == "random" and rng.random() < p.occlusion_prob:
        _occlude(img, rng, heavy=False)
    return _degrade(img, rng, p)


def render_nonface(rng: np.random.Generator, size: int, p: RenderParams) -> Image.Image:
    """A distractor without a face: a texture, a few objects, or a simple scenery."""
    kind = int(rng.integers(0, 3))
    s = size
    if kind == 0:  # texture: stripes / checker / blobs
        img = _background(rng, s, 0.0)
        d = ImageDraw.Draw(img)
        col = tuple(int(v) for v in rng.integers(0, 256, 3))
        step = int(rng.integers(3, max(4, s // 6)))
        pattern = int(rng.integers(0, 3))
        for k in range(-s, 2 * s, step * 2):
            if pattern == 0:
                d.line((k, 0, k + s // 2, s), fill=col, width=step)
            elif pattern == 1:
                for m in range(0, s, step * 2):
                    d.rectangle((k, m, k + step, m + step), fill=col)
            else:
                y = float(rng.random() * s)
                rr = float(step * (0.5 + rng.random()))
                d.ellipse((k - rr, y - rr, k + rr, y + rr), fill=col)
    elif kind == 1:  # objects
        img = _background(rng, s, 0.0)
        d = ImageDraw.Draw(img)
        for _ in range(int(rng.integers(2, 6))):
            col = tuple(int(v) for v in rng.integers(0, 256, 3))
            pts = [(float(x), float(y)) for x, y in rng.random((int(rng.integers(3, 7)), 2)) * s]
            if rng.random() < 0.5:
                d.polygon(pts, fill=col)
            else:
                x0, y0 = rng.random(2) * s * 0.7
                w = float(s * (0.1 + 0.3 * rng.random()))
                d.ellipse((x0, y0, x0 + w, y0 + w * (0.5 + rng.random())), fill=col)
    else:  # scenery: sky, hills, ground, sun, trees
        img = Image.new("RGB", (s, s))
        d = ImageDraw.Draw(img)
        sky = tuple(int(v) for v in (np.array([120, 170, 230]) * (0.6 + 0.5 * rng.random())).clip(0, 255))
        ground = tuple(int(v) for v in (np.array([70, 130, 60]) * (0.5 + 0.8 * rng.random())).clip(0, 255))
        hor = int(s * (0.4 + 0.3 * rng.random()))
        d.rectangle((0, 0, s, hor), fill=sky)
        d.rectangle((0, hor, s, s), fill=ground)
        pts = [(0, hor)] + [(float(x), float(hor - rng.random() * s * 0.3)) for x in np.linspace(0, s, 6)] + [(s, hor)]
        d.polygon(pts, fill=tuple(int(v * 0.8) for v in ground))
        if rng.random() < 0.6:
            x, y = rng.random(2) * s * np.array([1.0, 0.3])
            d.ellipse((x - s * 0.06, y - s * 0.06, x + s * 0.06, y + s * 0.06), fill=(250, 230, 120))
        for _ in range(int(rng.integers(0, 4))):
            tx = float(rng.random() * s)
            d.rectangle((tx - s * 0.015, hor - s * 0.05, tx + s * 0.015, hor + s * 0.1), fill=(90, 60, 30))
            d.ellipse((tx - s * 0.08, hor - s * 0.2, tx + s * 0.08, hor), fill=(40, 100, 40))
    return _degrade(img, rng, p)


def encode_jpeg(img: Image.Image, quality: int) -> bytes:
    """Encode deterministically (no EXIF, no optimisation passes that vary)."""
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=int(quality))
    return buf.getvalue()


def decode_jpeg(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as im:
        return np.asarray(im.convert("RGB"))
