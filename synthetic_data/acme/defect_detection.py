"""PCB defect detection: inspection image + solder/X-ray readings + board metadata -> defect class.

Each inspection has a 32x32 RGB image (a chip component between two pads on green solder mask) showing its
true defect: a bright solder bar between the pads (solder_bridge), dull joints with dark voids (cold_joint),
bare pads (missing_component) or a bright diagonal line (scratch). Readings carry the same signal: hot/high
paste for bridges, cold solder and voids for cold joints, a low component count for missing parts. ~60% none.
Drifted batch: a new reflow profile (+12 C), line L4 ramping up, twice as many solder bridges.
"""

from __future__ import annotations

import numpy as np

from synthetic_data import blocks as g

PREFIX = "DD"
PRIMARY = "acme_raw.pcb_inspections"
LABELS = "acme_raw.defect_detection_labels"
COLUMNS = {
    "item_ref": "string",
    "board_id": "string",
    "line_id": "string",
    "inspected_at": "timestamp",
    "image_path": "string",
    "solder_temp_c": "double",
    "paste_volume_pct": "double",
    "xray_void_pct": "double",
    "component_count": "integer",
    "operator_notes": "string",
}
BOARDS = "acme_raw.pcb_boards"
DIMENSIONS = {BOARDS: {"board_id": "string", "product_family": "string", "revision": "string", "plant": "string"}}

CLASSES = ["none", "solder_bridge", "cold_joint", "missing_component", "scratch"]
NONE, BRIDGE, COLD, MISSING, SCRATCH = range(5)
PRIOR = {False: [0.6, 0.12, 0.12, 0.09, 0.07], True: [0.45, 0.25, 0.12, 0.1, 0.08]}
LINES = ["L1", "L2", "L3", "L4"]
LINE_MIX = {False: [0.3, 0.3, 0.25, 0.15], True: [0.15, 0.15, 0.2, 0.5]}
FAMILIES = ["sensor_board", "power_board", "controller_board", "display_board"]
NOMINAL_COMPONENTS = np.array([180, 120, 420, 300])
REVISIONS = ["A1", "A2", "B1", "B2", "C1"]
PLANTS = ["Austin", "Penang", "Guadalajara"]

NOTES_BY_CLASS = [
    ["Looks clean.", "Joints look good.", "Passed visual check."],
    [
        "Possible bridging between pins.",
        "Excess solder near the connector.",
        "Short suspected on the fine-pitch IC.",
    ],
    ["Dull, grainy joints.", "Joint looks cold on one pad.", "Voids visible on X-ray."],
    ["Component appears absent.", "Empty pad near the regulator.", "Pick-and-place may have skipped a part."],
    ["Surface mark on the solder mask.", "Scratch near the board edge.", "Handling damage on the mask."],
]
GENERIC_NOTES = [
    "Routine inspection.",
    "No remarks.",
    "Checked against the golden board.",
    "Second pass after rework.",
]
DESIGNATORS = ["U3", "U7", "J2", "C14", "R22", "Q1", "L5"]

SIZE = 32  # image side (pixels)
MARGIN = 2  # random shift of the board within the image
CANVAS = SIZE + 2 * MARGIN
MASK, COPPER, BODY, SOLDER, DULL, SHINE = (
    (25, 105, 45),
    (185, 140, 60),
    (35, 35, 40),
    (205, 205, 210),
    (120, 118, 110),
    (235, 235, 230),
)


def dimensions(rng: np.random.Generator, rows: int) -> dict:
    n = g.dimension_size(rows)
    family = g.draw(rng, [0.3, 0.25, 0.25, 0.2], n)
    return {
        BOARDS: {
            "board_id": g.dimension_ids("PCB", n),
            "product_family": np.array(FAMILIES)[family],
            "_family": family,
            "revision": np.array(REVISIONS)[rng.integers(0, len(REVISIONS), n)],
            "plant": np.array(PLANTS)[g.draw(rng, [0.4, 0.35, 0.25], n)],
        }
    }


def block(ctx: g.BlockContext) -> g.Block:
    rng, n, drifted = ctx.rng, ctx.n, ctx.drifted
    boards = ctx.dims[BOARDS]
    board = rng.integers(0, boards["board_id"].shape[0], n)
    family = boards["_family"][board]
    true = g.draw(rng, PRIOR[drifted], n)

    solder_temp = rng.normal(np.select([true == COLD, true == BRIDGE], [222.0, 252.0], 245.0), 8) + 12 * drifted
    paste = rng.normal(np.select([true == BRIDGE, true == MISSING], [132.0, 90.0], 100.0), 11) + 5 * drifted
    voids = np.where(true == COLD, rng.gamma(4, 5, n), rng.gamma(2, 3, n))
    components = NOMINAL_COMPONENTS[family] + rng.normal(0, 4, n).round() - (true == MISSING) * rng.integers(1, 13, n)

    refs = ctx.refs.to_pylist()
    paths = [g.image_path(ctx.image_dir, ref) for ref in refs]
    label, noisy = g.resample(rng, true, PRIOR[drifted], ctx.label_noise)
    inspected_at = ctx.timestamps_us()
    columns = {
        "item_ref": ctx.refs,
        "board_id": boards["board_id"][board],
        "line_id": g.pick(LINES, g.draw(rng, LINE_MIX[drifted], n)),
        "inspected_at": inspected_at,
        "image_path": [ctx.image_cell(p) for p in paths],
        "solder_temp_c": np.clip(solder_temp, 150, 350).round(1),
        "paste_volume_pct": g.with_nulls(rng, np.clip(paste, 0, 200).round(1)),
        "xray_void_pct": g.with_nulls(rng, np.clip(voids, 0, 100).round(2)),
        "component_count": np.clip(components, 0, 2000).astype(np.int64),
        "operator_notes": _notes(rng, true),
    }
    labels = g.label_batch(
        ctx, g.enum_json(CLASSES, label), inspected_at, g.enum_conflicts(CLASSES, label), noisy=noisy
    )
    return g.Block(columns, labels, write_files=lambda: _write_images(ctx.child_rng("images"), paths, true))


def _notes(rng: np.random.Generator, true: np.ndarray) -> list[str | None]:
    """Short operator remarks: ~15% none, ~45% hinting at the true class, the rest generic."""
    kind = rng.random(true.shape[0])
    phrase = rng.integers(0, 3, true.shape[0])
    generic = rng.integers(0, len(GENERIC_NOTES), true.shape[0])
    designator = rng.integers(0, len(DESIGNATORS), true.shape[0])
    with_ref = rng.random(true.shape[0]) < 0.4
    notes: list[str | None] = []
    for k, c, p, gen, d, r in zip(kind, true, phrase, generic, designator, with_ref, strict=True):
        if k < 0.15:
            notes.append(None)
            continue
        text = NOTES_BY_CLASS[c][p] if k < 0.6 else GENERIC_NOTES[gen]
        notes.append(f"{text} Ref {DESIGNATORS[d]}." if r else text)
    return notes


def _write_images(rng: np.random.Generator, paths: list, true: np.ndarray, batch: int = 512) -> None:
    for start in range(0, len(paths), batch):
        canvases = render(rng, true[start : start + batch])
        shifts = rng.integers(0, 2 * MARGIN + 1, (canvases.shape[0], 2))  # the board is not always centred
        images = (canvas[dy : dy + SIZE, dx : dx + SIZE] for canvas, (dy, dx) in zip(canvases, shifts, strict=True))
        g.write_pngs(paths[start : start + batch], images)


def render(rng: np.random.Generator, true: np.ndarray) -> np.ndarray:
    """(n, 36, 36, 3) uint8 canvases showing each row's defect class (images are 32x32 crops of them)."""
    n = true.shape[0]
    img = np.empty((n, CANVAS, CANVAS, 3), dtype=np.float32)
    img[:] = MASK
    y, x = MARGIN, MARGIN  # the drawing below is in 32x32 image coordinates
    img[:, y + 11 : y + 21, x + 5 : x + 12] = COPPER  # left pad
    img[:, y + 11 : y + 21, x + 21 : x + 28] = COPPER  # right pad
    present = true != MISSING
    img[present, y + 12 : y + 20, x + 10 : x + 23] = BODY  # the chip body, overlapping the pads' inner ends
    joints = (true != COLD) & present
    img[joints, y + 12 : y + 20, x + 5 : x + 8] = SOLDER
    img[joints, y + 12 : y + 20, x + 25 : x + 28] = SOLDER
    cold = np.flatnonzero(true == COLD)
    img[cold, y + 12 : y + 20, x + 5 : x + 8] = DULL
    img[cold, y + 12 : y + 20, x + 25 : x + 28] = DULL
    voids = rng.integers(0, 8 * 3 * 2, (cold.shape[0], 6))  # 6 dark voids in the two dull joints
    img[cold[:, None], y + 12 + voids // 6, x + np.where(voids % 6 < 3, 5 + voids % 3, 25 + voids % 3)] = 15
    img[true == BRIDGE, y + 22 : y + 26, x + 7 : x + 26] = SOLDER  # solder bar shorting the pads
    scratched = np.flatnonzero(true == SCRATCH)
    offset = rng.integers(-10, 11, scratched.shape[0])
    row = np.arange(CANVAS)
    col = row[None, :] + offset[:, None]
    inside = (col >= 0) & (col < CANVAS)
    which = np.broadcast_to(scratched[:, None], col.shape)
    img[which[inside], np.broadcast_to(row, col.shape)[inside], col[inside]] = SHINE
    img *= rng.uniform(0.85, 1.15, (n, 1, 1, 1)).astype(np.float32)
    img += rng.normal(0, 6, img.shape).astype(np.float32)
    return np.clip(img, 0, 255).astype(np.uint8)
