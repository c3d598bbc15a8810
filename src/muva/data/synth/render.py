"""Painting one pedestrian (and an optional occluder) onto a background, with part boxes.

The figure's geometry (pose, joints, which drawn pieces make each part's box) is in
:mod:`muva.data.synth.figure`; this module draws it with PIL: head with hair or hat and
skin tone, neck, torso garment (colour, sleeve length, pattern), arms with hands, lower
garment (trousers, shorts or skirt), legs, shoes and an optional bag.  Everything is drawn
at twice the output resolution (the caller reduces by 2, which anti-aliases edges).

Each drawn piece reports its extent as it is drawn (:meth:`PersonPainter.piece`), so the
part boxes :func:`draw_person` returns cover exactly what was painted.
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageDraw

from muva.data.synth.appearance import RGB, Identity
from muva.data.synth.figure import WIDTH, PartBoxes, Pose, skeleton


def _dark(c: RGB, k: float = 0.62) -> RGB:
    return (int(c[0] * k), int(c[1] * k), int(c[2] * k))


class PersonPainter:
    """Draws one identity in one pose; :meth:`draw` returns the part boxes."""

    def __init__(self, canvas: Image.Image, ident: Identity, pose: Pose):
        self.canvas = canvas
        self.d = ImageDraw.Draw(canvas, "RGBA")
        self.id, self.p = ident, pose
        self.h = pose.height
        self.g = ident.girth * WIDTH
        self.side = pose.side
        self.f = pose.facing     # facing direction in side views
        self.skin = ident.skin
        self.boxes = PartBoxes()
        joints = skeleton(pose, self.g)
        self.top, self.legs, self.arms, self.sw = joints.top, joints.legs, joints.arms, joints.shoulder

    # ------------------------------------------------------------------ helpers
    def piece(self, name: str):
        """Where a drawn piece reports its extent (the boxes of the parts made of it)."""
        return self.boxes.piece(name)

    def y(self, t: float) -> float:
        return self.top + t * self.h

    def x(self, u: float) -> float:
        return self.p.cx + u * self.h

    def capsules(self, segments, fill: RGB, outline: bool = True) -> None:
        """Tapered capsules ``(p0, p1, r0, r1)``: outlines of all first, then fills."""
        passes = ((_dark(fill), 1.6), (fill, 0.0)) if outline else ((fill, 0.0),)
        for colour, grow in passes:
            for p0, p1, r0, r1 in segments:
                r0g, r1g = r0 + grow, r1 + grow
                dx, dy = p1[0] - p0[0], p1[1] - p0[1]
                n = math.hypot(dx, dy) or 1.0
                nx, ny = -dy / n, dx / n
                self.d.polygon([(p0[0] + nx * r0g, p0[1] + ny * r0g), (p1[0] + nx * r1g, p1[1] + ny * r1g),
                                (p1[0] - nx * r1g, p1[1] - ny * r1g), (p0[0] - nx * r0g, p0[1] - ny * r0g)], fill=colour)
                self.d.ellipse((p0[0] - r0g, p0[1] - r0g, p0[0] + r0g, p0[1] + r0g), fill=colour)
                self.d.ellipse((p1[0] - r1g, p1[1] - r1g, p1[0] + r1g, p1[1] + r1g), fill=colour)

    # ------------------------------------------------------------------ parts
    def shadow(self) -> None:
        y = self.p.baseline
        rx = (0.2 if self.side else 0.14) * self.h
        self.d.ellipse((self.p.cx - rx, y - 0.018 * self.h, self.p.cx + rx, y + 0.018 * self.h), fill=(0, 0, 0, 70))

    def leg(self, k: int, far: bool = False) -> None:
        hip, knee, ankle = self.legs[k]
        idn, h, g = self.id, self.h, self.g
        shade = 0.8 if far else 1.0
        skin = _dark(self.skin, shade)
        lower = _dark(idn.rgb("lower"), shade)
        rt, rk, ra = 0.042 * g * h, 0.03 * g * h, 0.021 * h
        mid = ((hip[0] + knee[0]) / 2, (hip[1] + knee[1]) / 2)
        if idn.lower == "trousers":
            self.capsules([(hip, knee, rt, rk * 1.1), (knee, ankle, rk * 1.1, ra * 1.15)], lower)
        elif idn.lower == "shorts":
            self.capsules([(knee, ankle, rk * 0.9, ra * 0.9)], skin, outline=False)
            self.capsules([(mid, knee, rk, rk * 0.9)], skin, outline=False)
            self.capsules([(hip, mid, rt, rt * 0.95)], lower)
        else:  # skirt: bare legs (the skirt is drawn over the hips later)
            self.capsules([(hip, knee, rt * 0.8, rk * 0.85), (knee, ankle, rk * 0.85, ra * 0.9)], skin, outline=False)
        self.shoe(ankle, shade)
        ext = self.piece("leg")
        for q, r in ((hip, rt), (knee, rk * 1.1), (ankle, ra * 1.15)):
            ext.point(q, r)

    def shoe(self, ankle, shade: float) -> None:
        h = self.h
        col = _dark(self.id.rgb("shoe"), shade)
        if self.side:
            x0, x1 = ankle[0] - 0.035 * h, ankle[0] + 0.085 * h
            if self.f < 0:
                x0, x1 = ankle[0] - 0.085 * h, ankle[0] + 0.035 * h
            box = (x0, ankle[1] - 0.012 * h, x1, ankle[1] + 0.055 * h)
        else:
            box = (ankle[0] - 0.033 * h, ankle[1] - 0.012 * h, ankle[0] + 0.033 * h, ankle[1] + 0.055 * h)
        self.d.rounded_rectangle(box, radius=0.02 * h, fill=col, outline=_dark(col, 0.5), width=2)
        self.piece("shoe").add(*box)

    def hips(self) -> None:
        idn, h, g = self.id, self.h, self.g
        hw = (0.06 if self.side else 0.092) * g
        lower = idn.rgb("lower")
        if idn.lower == "skirt":
            flare = 1.5
            pts = [(self.x(-hw), self.y(0.47)), (self.x(hw), self.y(0.47)),
                   (self.x(hw * flare), self.y(0.7)), (self.x(-hw * flare), self.y(0.7))]
            self.d.polygon(pts, fill=lower, outline=_dark(lower), width=2)
            self.piece("hips").add(pts[3][0], pts[0][1], pts[2][0], pts[2][1])
        else:
            box = (self.x(-hw), self.y(0.46), self.x(hw), self.y(0.58))
            self.d.rounded_rectangle(box, radius=0.03 * h, fill=lower, outline=_dark(lower), width=2)
            self.piece("hips").add(box[0], self.y(0.49), box[2], box[3])

    def torso(self) -> None:
        idn, g = self.id, self.g
        top = idn.rgb("top")
        hem = 0.535
        if self.side:
            f = self.f
            us = [0.06, 0.075, 0.07, 0.062, -0.06, -0.058, -0.055]
            ts = [0.16, 0.26, 0.36, hem, hem, 0.34, 0.165]
            pts = [(self.x(f * u * g), self.y(t)) for u, t in zip(us, ts)]
        else:
            sw, ww, hw = self.sw, 0.085 * g, 0.095 * g
            pts = [(self.x(-sw * 0.8), self.y(0.155)), (self.x(-sw), self.y(0.19)), (self.x(-ww), self.y(0.38)),
                   (self.x(-hw), self.y(hem)), (self.x(hw), self.y(hem)), (self.x(ww), self.y(0.38)),
                   (self.x(sw), self.y(0.19)), (self.x(sw * 0.8), self.y(0.155))]
        # neck
        nw = 0.022 * self.h
        self.d.rectangle((self.x(0) - nw, self.y(0.12), self.x(0) + nw, self.y(0.17)), fill=_dark(self.skin, 0.9))
        self.d.polygon(pts, fill=top, outline=_dark(top), width=2)
        if idn.sleeves == "none" and not self.side:  # tank top: bare shoulders
            for sgn in (-1, 1):
                self.d.ellipse((self.x(sgn * self.sw) - 0.03 * self.h, self.y(0.16), self.x(sgn * self.sw) + 0.03 * self.h,
                                self.y(0.22)), fill=self.skin)
        self.pattern(pts)
        ext = self.piece("torso")
        for q in pts:
            ext.point(q)
        # from the neck base to the hem, across the garment
        ext.add(min(q[0] for q in pts), self.y(0.15), max(q[0] for q in pts), self.y(hem))

    def pattern(self, pts) -> None:
        idn = self.id
        if idn.pattern == "solid":
            return
        col2 = idn.rgb("top2")
        xs, ys = [q[0] for q in pts], [q[1] for q in pts]
        x0, y0, x1, y1 = int(min(xs)), int(min(ys)), int(math.ceil(max(xs))) + 1, int(math.ceil(max(ys))) + 1
        w, hgt = x1 - x0, y1 - y0
        if w < 2 or hgt < 2:
            return
        if idn.pattern == "logo":
            if self.p.view != "front":
                return
            cx, cy, r = self.x(0), self.y(0.29), 0.035 * self.h * self.g
            self.d.regular_polygon((cx, cy, r), n_sides=5 if idn.key % 2 else 4, rotation=idn.key % 45, fill=col2)
            return
        mask = Image.new("L", (w, hgt), 0)
        ImageDraw.Draw(mask).polygon([(q[0] - x0, q[1] - y0) for q in pts], fill=255)
        period = max(4, int(0.032 * self.h))
        yy = (np.arange(y0, y1) - int(self.top)) // period
        if idn.pattern == "stripes":
            pat = np.broadcast_to((yy % 2 == 0)[:, None], (hgt, w))
        else:
            xx = (np.arange(x0, x1) - int(self.p.cx)) // period
            pat = (yy[:, None] + xx[None, :]) % 2 == 0
        m = np.asarray(mask) & (pat.astype(np.uint8) * 255)
        self.canvas.paste(col2, (x0, y0), Image.fromarray(m, "L"))

    def arm(self, k: int, far: bool = False) -> None:
        shoulder, elbow, wrist = self.arms[k]
        idn, h, g = self.id, self.h, self.g
        shade = 0.8 if far else 1.0
        top, skin = _dark(idn.rgb("top"), shade), _dark(self.skin, shade)
        ru, rf = 0.027 * g * h, 0.021 * g * h
        if idn.sleeves == "long":
            self.capsules([(shoulder, elbow, ru, rf * 1.05), (elbow, wrist, rf * 1.05, rf)], top)
        elif idn.sleeves == "short":
            mid = ((shoulder[0] * 0.45 + elbow[0] * 0.55), (shoulder[1] * 0.45 + elbow[1] * 0.55))
            self.capsules([(mid, elbow, ru * 0.85, rf), (elbow, wrist, rf, rf * 0.9)], skin, outline=False)
            self.capsules([(shoulder, mid, ru * 1.05, ru)], top)
        else:
            self.capsules([(shoulder, elbow, ru * 0.85, rf), (elbow, wrist, rf, rf * 0.9)], skin, outline=False)
        hr = 0.024 * h
        self.d.ellipse((wrist[0] - hr, wrist[1] - hr * 0.6, wrist[0] + hr, wrist[1] + hr * 1.4), fill=skin)
        ext = self.piece("arm")
        ext.point(shoulder, ru)
        ext.point(elbow, rf)
        ext.add(wrist[0] - hr, wrist[1] - hr, wrist[0] + hr, wrist[1] + hr * 1.4)

    def head(self) -> None:
        idn, h = self.id, self.h
        cx = self.x(0.012 * self.f if self.side else 0.0)
        cy, rx, ry = self.y(0.068), 0.056 * h, 0.066 * h
        hair = idn.rgb("hair")
        ext = self.piece("head")
        ext.add(cx - rx, cy - ry, cx + rx, cy + ry)
        back = self.p.view == "back"
        long_hair = self.long_hair()
        if long_hair and self.side:  # hair hanging behind the head
            drop = 0.2 if idn.hair_style == "long" else 0.12
            xa, xb = cx - self.f * rx * 1.1, cx + self.f * rx * 0.2
            self.d.rounded_rectangle((min(xa, xb), cy - ry * 0.6, max(xa, xb), self.y(drop)), radius=rx * 0.5, fill=hair)
        self.d.ellipse((cx - rx, cy - ry, cx + rx, cy + ry), fill=self.skin, outline=_dark(self.skin, 0.75), width=1)
        if idn.hair_style != "bald" or back:
            cover = 0.95 if back else 0.42
            if idn.hair_style == "bald":
                cover = 0.3
            if self.side:
                # hair covers the crown and the back of the head
                bx = cx - self.f * rx * 0.25
                self.d.chord((bx - rx * 1.05, cy - ry * 1.06, bx + rx * 1.05, cy + ry * 0.9),
                             start=200 if self.f > 0 else -110, end=380 if self.f < 0 else 470, fill=hair)
                self.d.ellipse((cx - rx * 1.04, cy - ry * 1.08, cx + rx * 1.04, cy - ry * 0.1), fill=hair)
            else:
                self.d.ellipse((cx - rx * 1.06, cy - ry * 1.08, cx + rx * 1.06, cy + ry * (2 * cover - 1) * 1.05), fill=hair)
            if back and long_hair:
                drop = 0.22 if idn.hair_style == "long" else 0.13
                self.d.rounded_rectangle((cx - rx * 1.1, cy - ry * 0.3, cx + rx * 1.1, self.y(drop)), radius=rx * 0.5, fill=hair)
            if idn.hair_style == "ponytail" and (back or self.side):
                tx = cx - self.f * rx * 1.1 if self.side else cx
                self.d.ellipse((tx - rx * 0.35, cy - ry * 0.2, tx + rx * 0.35, cy + ry * 1.3), fill=hair)
            ext.add(cx - rx * 1.06, cy - ry * 1.08, cx + rx * 1.06, cy + ry)
        if not back:
            self.face(cx, cy, rx, ry)
        if idn.hat != "none":
            hat = idn.rgb("hat")
            if idn.hat == "cap":
                self.d.chord((cx - rx * 1.08, cy - ry * 1.15, cx + rx * 1.08, cy + ry * 0.25), start=180, end=360, fill=hat,
                             outline=_dark(hat), width=1)
                if self.side:
                    bx0 = cx + self.f * rx * 0.4
                    self.d.rectangle((min(bx0, bx0 + self.f * rx * 1.1), cy - ry * 0.52, max(bx0, bx0 + self.f * rx * 1.1), cy - ry * 0.38),
                                     fill=_dark(hat, 0.8))
                    ext.add(min(bx0, bx0 + self.f * rx * 1.1), cy - ry, max(bx0, bx0 + self.f * rx * 1.1), cy)
                elif not back:
                    self.d.ellipse((cx - rx * 0.95, cy - ry * 0.55, cx + rx * 0.95, cy - ry * 0.3), fill=_dark(hat, 0.8))
            else:  # beanie
                self.d.chord((cx - rx * 1.08, cy - ry * 1.3, cx + rx * 1.08, cy + ry * 0.35), start=180, end=360, fill=hat,
                             outline=_dark(hat), width=1)
                self.d.rectangle((cx - rx * 1.08, cy - ry * 0.55, cx + rx * 1.08, cy - ry * 0.4), fill=_dark(hat, 0.85))
            ext.add(cx - rx * 1.08, cy - ry * (1.3 if idn.hat == "beanie" else 1.15), cx + rx * 1.08, cy)

    def long_hair(self) -> bool:
        return self.id.hair_style == "long" or (self.id.hair_style == "bob" and self.id.hat != "cap")

    def hair_behind(self) -> None:
        """Front view: long hair seen beside the neck, drawn before the torso."""
        if self.p.view != "front" or not self.long_hair():
            return
        h = self.h
        cx, cy, rx, ry = self.x(0.0), self.y(0.068), 0.056 * h, 0.066 * h
        drop = 0.21 if self.id.hair_style == "long" else 0.13
        self.d.rounded_rectangle((cx - rx * 1.12, cy - ry * 0.6, cx + rx * 1.12, self.y(drop)), radius=rx * 0.6,
                                 fill=self.id.rgb("hair"))

    def face(self, cx: float, cy: float, rx: float, ry: float) -> None:
        eye = (35, 25, 20)
        er = max(1.2, 0.1 * rx)
        if self.side:
            ex = cx + self.f * rx * 0.55
            self.d.ellipse((ex - er, cy - er, ex + er, cy + er), fill=eye)
            self.d.polygon([(cx + self.f * rx * 0.92, cy), (cx + self.f * rx * 1.12, cy + ry * 0.25), (cx + self.f * rx * 0.9, cy + ry * 0.3)],
                           fill=self.skin)
        else:
            for sgn in (-1, 1):
                ex = cx + sgn * rx * 0.38
                self.d.ellipse((ex - er, cy + ry * 0.05 - er, ex + er, cy + ry * 0.05 + er), fill=eye)
            self.d.line((cx - rx * 0.22, cy + ry * 0.5, cx + rx * 0.22, cy + ry * 0.5), fill=_dark(self.skin, 0.6), width=2)

    def bag(self, phase: str) -> None:
        """``phase`` 'behind' (drawn before the torso) or 'front' (after it)."""
        idn, h, g = self.id, self.h, self.g
        if idn.bag == "none":
            return
        col = idn.rgb("bag")
        view = self.p.view
        if idn.bag == "backpack":
            if phase == "behind" and view == "front":
                return
            if phase == "front":
                if view == "back":
                    box = (self.x(-0.085 * g), self.y(0.19), self.x(0.085 * g), self.y(0.44))
                    self.d.rounded_rectangle(box, radius=0.03 * h, fill=col, outline=_dark(col), width=2)
                    self.piece("backpack").add(*box)
                elif view == "front":
                    for sgn in (-1, 1):
                        self.d.line((self.x(sgn * 0.06 * g), self.y(0.165), self.x(sgn * 0.065 * g), self.y(0.36)), fill=_dark(col), width=max(2, int(0.015 * h)))
                else:
                    self.d.line((self.x(0), self.y(0.17), self.x(0.01 * self.f), self.y(0.36)), fill=_dark(col), width=max(2, int(0.015 * h)))
            elif self.side:
                xa, xb = self.x(-self.f * 0.045 * g), self.x(-self.f * 0.135 * g)
                box = (min(xa, xb), self.y(0.19), max(xa, xb), self.y(0.43))
                self.d.rounded_rectangle(box, radius=0.03 * h, fill=col, outline=_dark(col), width=2)
                self.piece("backpack").add(*box)
            return
        if phase != "front":
            return
        if idn.bag == "shoulder":
            sgn = 1.0 if idn.key % 2 else -1.0
            if not self.side and view != "back":
                self.d.line((self.x(-sgn * 0.07 * g), self.y(0.17), self.x(sgn * 0.09 * g), self.y(0.44)), fill=_dark(col), width=max(2, int(0.012 * h)))
            bx = self.x(sgn * 0.1 * g) if not self.side else self.x(-self.f * 0.03)
            self.d.rounded_rectangle((bx - 0.045 * h, self.y(0.42), bx + 0.045 * h, self.y(0.52)), radius=0.012 * h, fill=col, outline=_dark(col), width=2)
        else:  # handbag in one hand
            k = 0 if (self.p.hand > 0) == (self.arms[0][2][0] >= self.arms[1][2][0]) else 1
            wx, wy = self.arms[k][2]
            self.d.line((wx - 0.02 * h, wy + 0.01 * h, wx, wy - 0.01 * h, wx + 0.02 * h, wy + 0.01 * h), fill=_dark(col), width=2)
            self.d.rounded_rectangle((wx - 0.04 * h, wy + 0.01 * h, wx + 0.04 * h, wy + 0.08 * h), radius=0.01 * h, fill=col, outline=_dark(col), width=2)

    # ------------------------------------------------------------------ whole figure
    def draw(self) -> dict[str, list[float]]:
        """Draw the figure (far limbs first in side views) and return ``{part: [x0, y0, x1, y1]}``."""
        self.shadow()
        if self.side:
            # far arm and far leg first, darker; then near leg, hips, torso, near arm.
            self.arm(1, far=True)
            self.leg(1, far=True)
            self.leg(0)
            self.bag("behind")
            self.hips()
            self.torso()
            self.head()
            self.bag("front")
            self.arm(0)
        else:
            self.leg(0)
            self.leg(1)
            self.hips()
            self.bag("behind")
            self.hair_behind()
            self.torso()
            self.arm(0)
            self.arm(1)
            self.head()
            self.bag("front")
        return self.boxes.boxes()


def draw_occluder(canvas: Image.Image, occ: tuple) -> tuple[float, float, float, float]:
    """Draw an occluder (barrier, pole or box) and return its rectangle."""
    kind, x0, y0, x1, y1, colour = occ
    d = ImageDraw.Draw(canvas)
    d.rectangle((x0, y0, x1, y1), fill=colour, outline=_dark(colour, 0.5), width=3)
    if kind == "barrier":
        for k in range(1, 4):
            yy = y0 + (y1 - y0) * k / 4
            d.line((x0, yy, x1, yy), fill=_dark(colour, 0.75), width=2)
    elif kind == "box":
        d.line((x0, y0 + (y1 - y0) * 0.15, x1, y0 + (y1 - y0) * 0.15), fill=_dark(colour, 0.7), width=2)
    return (x0, y0, x1, y1)


def draw_person(canvas: Image.Image, ident: Identity, pose: Pose) -> dict[str, list[float]]:
    """Draw ``ident`` in ``pose`` on ``canvas``; returns the part boxes (canvas pixels)."""
    return PersonPainter(canvas, ident, pose).draw()
