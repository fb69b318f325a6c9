//! The auto-layout engine: where each participant's tile goes on the
//! broadcast canvas. Pure geometry, so every mode is tested natively.
//!
//! - **grid**: 1 → full frame; 2 → side by side; 3 → two on top, one centred
//!   below; 4 → 2×2; 5–9 → 3×3; 10–12 → 4×3 (more → 4 columns, more rows).
//!   Tiles are 16:9, equal in size, separated by a small gap, and the block
//!   is centred; an incomplete last row is centred too.
//! - **pip**: the featured participant (or the first) full frame, the others
//!   as small 16:9 thumbnails along the bottom-right corner, above it.
//! - **versus**: two equal halves (more than two participants → grid).

/// How participants are arranged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LayoutMode {
    #[default]
    Grid,
    Pip,
    Versus,
}

impl LayoutMode {
    /// Parses the JS option value (`'grid' | 'pip' | 'versus'`).
    pub fn parse(s: &str) -> Option<LayoutMode> {
        match s {
            "grid" => Some(LayoutMode::Grid),
            "pip" => Some(LayoutMode::Pip),
            "versus" => Some(LayoutMode::Versus),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            LayoutMode::Grid => "grid",
            LayoutMode::Pip => "pip",
            LayoutMode::Versus => "versus",
        }
    }
}

/// An axis-aligned box in canvas pixels.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rect {
    pub x: f64,
    pub y: f64,
    pub width: f64,
    pub height: f64,
}

impl Rect {
    /// Whether the two boxes share any area (touching edges do not count).
    pub fn overlaps(&self, other: &Rect) -> bool {
        self.x < other.x + other.width
            && other.x < self.x + self.width
            && self.y < other.y + other.height
            && other.y < self.y + self.height
    }

    /// Whether `other` lies entirely within this box (to half a pixel).
    pub fn covers(&self, other: &Rect) -> bool {
        const SLACK: f64 = 0.5;
        self.x <= other.x + SLACK
            && self.y <= other.y + SLACK
            && self.x + self.width >= other.x + other.width - SLACK
            && self.y + self.height >= other.y + other.height - SLACK
    }

    /// Whether the box lies within a `width`×`height` canvas.
    pub fn inside(&self, width: f64, height: f64) -> bool {
        self.x >= 0.0
            && self.y >= 0.0
            && self.width > 0.0
            && self.height > 0.0
            && self.x + self.width <= width
            && self.y + self.height <= height
    }
}

/// One participant's place: its box and its z-order (`index`, drawn
/// ascending, as IVS `VideoComposition.index`).
#[derive(Debug, Clone, PartialEq)]
pub struct Slot {
    pub id: String,
    pub rect: Rect,
    pub index: u32,
}

/// The gap between tiles: 1% of the shorter canvas side, at least 2 px.
fn gap(width: f64, height: f64) -> f64 {
    (width.min(height) * 0.01).round().max(2.0)
}

/// Columns and rows of the grid for `n` tiles.
pub fn grid_shape(n: usize) -> (usize, usize) {
    match n {
        0 | 1 => (1, 1),
        2 => (2, 1),
        3 | 4 => (2, 2),
        5..=9 => (3, 3),
        _ => (4, n.div_ceil(4)),
    }
}

/// Slots for `ids` on a `width`×`height` canvas. The order of `ids` is the
/// order of the tiles (row-major), except that pip puts `featured` (if
/// present) in the big frame. The result is deterministic.
pub fn layout(
    width: f64,
    height: f64,
    mode: LayoutMode,
    ids: &[String],
    featured: Option<&str>,
) -> Vec<Slot> {
    if ids.is_empty() || width <= 0.0 || height <= 0.0 {
        return Vec::new();
    }
    if ids.len() == 1 {
        return vec![full(width, height, &ids[0], 0)];
    }
    match mode {
        LayoutMode::Grid => grid(width, height, ids),
        LayoutMode::Versus if ids.len() == 2 => {
            let half = (width / 2.0).floor();
            ids.iter()
                .enumerate()
                .map(|(i, id)| Slot {
                    id: id.clone(),
                    rect: Rect {
                        x: i as f64 * half,
                        y: 0.0,
                        width: half,
                        height,
                    },
                    index: i as u32,
                })
                .collect()
        }
        LayoutMode::Versus => grid(width, height, ids),
        LayoutMode::Pip => pip(width, height, ids, featured),
    }
}

fn full(width: f64, height: f64, id: &str, index: u32) -> Slot {
    Slot {
        id: id.to_owned(),
        rect: Rect {
            x: 0.0,
            y: 0.0,
            width,
            height,
        },
        index,
    }
}

fn grid(width: f64, height: f64, ids: &[String]) -> Vec<Slot> {
    let n = ids.len();
    let (cols, rows) = grid_shape(n);
    let g = gap(width, height);
    let (c, r) = (cols as f64, rows as f64);
    let max_w = (width - g * (c + 1.0)) / c;
    let max_h = (height - g * (r + 1.0)) / r;
    // Largest 16:9 tile that fits both ways, in whole pixels.
    let mut tile_w = max_w.min(max_h * 16.0 / 9.0).floor().max(1.0);
    let mut tile_h = (tile_w * 9.0 / 16.0).floor().max(1.0);
    if tile_h > max_h {
        tile_h = max_h.floor().max(1.0);
        tile_w = (tile_h * 16.0 / 9.0).floor().max(1.0);
    }
    let block_h = r * tile_h + (r - 1.0) * g;
    let top = ((height - block_h) / 2.0).floor();
    ids.iter()
        .enumerate()
        .map(|(i, id)| {
            let row = i / cols;
            let col = i % cols;
            let in_row = (n - row * cols).min(cols) as f64;
            let row_w = in_row * tile_w + (in_row - 1.0) * g;
            let left = ((width - row_w) / 2.0).floor();
            Slot {
                id: id.clone(),
                rect: Rect {
                    x: left + col as f64 * (tile_w + g),
                    y: top + row as f64 * (tile_h + g),
                    width: tile_w,
                    height: tile_h,
                },
                index: i as u32,
            }
        })
        .collect()
}

/// Thumbnails per row in picture-in-picture.
const PIP_PER_ROW: usize = 4;

fn pip(width: f64, height: f64, ids: &[String], featured: Option<&str>) -> Vec<Slot> {
    let main = featured
        .and_then(|f| ids.iter().position(|id| id == f))
        .unwrap_or(0);
    let mut slots = vec![full(width, height, &ids[main], 0)];
    let others: Vec<&String> = ids
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != main)
        .map(|(_, id)| id)
        .collect();
    let g = gap(width, height) * 2.0;
    let rows = others.len().div_ceil(PIP_PER_ROW) as f64;
    // A fifth of the width, shrunk if the rows would not fit in the height.
    let max_h = (height - g * (rows + 1.0)) / rows;
    let thumb_w = (width / 5.0).min(max_h * 16.0 / 9.0).floor().max(1.0);
    let thumb_h = (thumb_w * 9.0 / 16.0).floor().max(1.0);
    for (k, id) in others.into_iter().enumerate() {
        // Fill from the bottom-right corner leftwards, then upwards.
        let row = (k / PIP_PER_ROW) as f64;
        let col = (k % PIP_PER_ROW) as f64;
        slots.push(Slot {
            id: id.clone(),
            rect: Rect {
                x: width - g - thumb_w - col * (thumb_w + g),
                y: height - g - thumb_h - row * (thumb_h + g),
                width: thumb_w,
                height: thumb_h,
            },
            index: k as u32 + 1,
        });
    }
    slots
}

/// Where a `src_w`×`src_h` picture goes when aspect-fitted (letterboxed,
/// centred) into `bx` — as IVS draws every source. `None` if the source
/// has no size yet.
pub fn aspect_fit(src_w: f64, src_h: f64, bx: &Rect) -> Option<Rect> {
    if src_w <= 0.0 || src_h <= 0.0 || bx.width <= 0.0 || bx.height <= 0.0 {
        return None;
    }
    let scale = (bx.width / src_w).min(bx.height / src_h);
    let (w, h) = (src_w * scale, src_h * scale);
    Some(Rect {
        x: bx.x + (bx.width - w) / 2.0,
        y: bx.y + (bx.height - h) / 2.0,
        width: w,
        height: h,
    })
}

/// Which of the layers, drawn in order, the frame must draw: a layer whose
/// drawn box (`None`: nothing to draw) is wholly covered by a later opaque
/// one would be painted over, so drawing it is wasted work (a card under
/// its participant's video, every frame). `opaque` says which layers fully
/// paint their box (video frames do; images and canvases may be
/// transparent). Writes into `draw` so the compositor reuses one buffer.
pub fn visible_layers(boxes: &[(Option<Rect>, bool)], draw: &mut Vec<bool>) {
    draw.clear();
    for (i, (rect, _)) in boxes.iter().enumerate() {
        let shown = rect.is_some_and(|r| {
            !boxes[i + 1..]
                .iter()
                .any(|(above, opaque)| *opaque && above.is_some_and(|a| a.covers(&r)))
        });
        draw.push(shown);
    }
}

/// A participant's name on their tile (beyond IVS, whose composites have
/// none): a dark box inset in a corner of the drawn picture, the name in it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Label {
    /// The dark box.
    pub rect: Rect,
    /// Where the text starts: its left edge and vertical middle.
    pub text_x: f64,
    pub text_y: f64,
    /// The widest the text may be drawn; a longer name is squeezed to fit.
    pub max_text_width: f64,
}

/// The label's font size for a picture drawn in `pic`: a fourteenth of its
/// height, 10–32 px. `None` when the picture is too small to carry a
/// readable label without hiding the face under it.
// max/min rather than clamp: clamp's panic path costs the wasm bytes.
#[allow(clippy::manual_clamp)]
pub fn label_font_px(pic: &Rect) -> Option<f64> {
    let font = (pic.height / 14.0).round().max(10.0).min(32.0);
    (pic.height >= font * 5.0 && pic.width >= font * 8.0).then_some(font)
}

/// Where the name label of a picture drawn in `pic` goes, for a name
/// `text_width` px wide at `font_px`: the bottom-left corner, inset; the
/// top-left corner when a box drawn later (`later`, as [`visible_layers`]
/// takes them: picture-in-picture thumbnails along the bottom) would cover
/// it. The box never leaves the picture: a long name is squeezed into
/// `max_text_width`.
pub fn name_label(pic: &Rect, font_px: f64, text_width: f64, later: &[(Option<Rect>, bool)]) -> Label {
    let margin = (font_px * 0.5).round();
    let pad = (font_px * 0.4).round();
    let height = (font_px * 1.6).round();
    let max_text_width = (pic.width - 2.0 * (margin + pad)).max(0.0);
    let bottom = Rect {
        x: pic.x + margin,
        y: pic.y + pic.height - margin - height,
        width: text_width.max(0.0).min(max_text_width) + 2.0 * pad,
        height,
    };
    let covered = later.iter().any(|(r, _)| r.is_some_and(|r| r.overlaps(&bottom)));
    let rect = if covered { Rect { y: pic.y + margin, ..bottom } } else { bottom };
    Label { rect, text_x: rect.x + pad, text_y: rect.y + height / 2.0, max_text_width }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rect(x: f64, y: f64, width: f64, height: f64) -> Rect {
        Rect { x, y, width, height }
    }

    #[test]
    fn a_layer_under_an_opaque_one_that_covers_it_is_not_drawn() {
        let tile = rect(0.0, 0.0, 320.0, 180.0);
        let other = rect(320.0, 0.0, 320.0, 180.0);
        let mut draw = Vec::new();
        // A card and its video; another card, no video yet; nothing to draw;
        // a video half a pixel off the first tile, on top of everything.
        let boxes = [
            (Some(tile), false),
            (Some(tile), true),
            (Some(other), false),
            (None, true),
            (Some(rect(0.3, 0.0, 319.8, 180.0)), true),
        ];
        visible_layers(&boxes, &mut draw);
        assert_eq!(draw, [false, false, true, false, true]);
        // A transparent layer on top hides nothing; a smaller opaque one
        // (a letterboxed 4:3 video) leaves the card's edges to draw.
        let boxes = [
            (Some(tile), false),
            (Some(tile), false),
            (Some(rect(40.0, 0.0, 240.0, 180.0)), true),
        ];
        visible_layers(&boxes, &mut draw);
        assert_eq!(draw, [true, true, true]);
    }

    fn ids(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("p{i}")).collect()
    }

    const CANVASES: [(f64, f64); 3] = [(1280.0, 720.0), (852.0, 480.0), (1920.0, 1080.0)];

    #[test]
    fn empty_gives_no_slots() {
        assert!(layout(1280.0, 720.0, LayoutMode::Grid, &[], None).is_empty());
        assert!(layout(0.0, 720.0, LayoutMode::Grid, &ids(2), None).is_empty());
    }

    #[test]
    fn one_participant_is_full_frame_in_every_mode() {
        for mode in [LayoutMode::Grid, LayoutMode::Pip, LayoutMode::Versus] {
            let s = layout(1280.0, 720.0, mode, &ids(1), None);
            assert_eq!(s.len(), 1);
            assert_eq!(
                s[0].rect,
                Rect {
                    x: 0.0,
                    y: 0.0,
                    width: 1280.0,
                    height: 720.0
                }
            );
        }
    }

    #[test]
    fn grid_1_to_12_no_overlap_inside_equal_sizes_16_9() {
        for (w, h) in CANVASES {
            for n in 1..=12 {
                let s = layout(w, h, LayoutMode::Grid, &ids(n), None);
                assert_eq!(s.len(), n, "n={n}");
                for (i, slot) in s.iter().enumerate() {
                    assert_eq!(slot.id, format!("p{i}"), "order kept");
                    assert_eq!(slot.index, i as u32);
                    assert!(slot.rect.inside(w, h), "n={n} {slot:?} in {w}x{h}");
                    assert_eq!(slot.rect.width, s[0].rect.width, "equal widths n={n}");
                    assert_eq!(slot.rect.height, s[0].rect.height, "equal heights n={n}");
                    let ratio = slot.rect.width / slot.rect.height;
                    assert!((ratio - 16.0 / 9.0).abs() < 0.02, "n={n} ratio {ratio}");
                    for other in &s[i + 1..] {
                        assert!(!slot.rect.overlaps(&other.rect), "n={n} overlap");
                    }
                }
            }
        }
    }

    #[test]
    fn grid_shapes() {
        let expect = [
            (1, (1, 1)),
            (2, (2, 1)),
            (3, (2, 2)),
            (4, (2, 2)),
            (5, (3, 3)),
            (9, (3, 3)),
            (10, (4, 3)),
            (12, (4, 3)),
        ];
        for (n, shape) in expect {
            assert_eq!(grid_shape(n), shape, "n={n}");
        }
    }

    #[test]
    fn grid_two_side_by_side_three_centred_below() {
        let s = layout(1280.0, 720.0, LayoutMode::Grid, &ids(2), None);
        assert_eq!(s[0].rect.y, s[1].rect.y);
        assert!(s[0].rect.x + s[0].rect.width <= s[1].rect.x);
        // Centred horizontally (whole-pixel rounding aside).
        let right_margin = 1280.0 - (s[1].rect.x + s[1].rect.width);
        assert!((s[0].rect.x - right_margin).abs() <= 1.0);

        let s = layout(1280.0, 720.0, LayoutMode::Grid, &ids(3), None);
        assert_eq!(s[0].rect.y, s[1].rect.y);
        assert!(s[2].rect.y > s[0].rect.y);
        let centre = s[2].rect.x + s[2].rect.width / 2.0;
        assert!(
            (centre - 640.0).abs() <= 1.0,
            "third tile centred: {centre}"
        );
    }

    #[test]
    fn grid_tiles_are_large() {
        // Two tiles use (almost) the whole width; four fill (almost) the height.
        let s = layout(1280.0, 720.0, LayoutMode::Grid, &ids(2), None);
        assert!(s[0].rect.width >= 620.0);
        let s = layout(1280.0, 720.0, LayoutMode::Grid, &ids(4), None);
        assert!(s[0].rect.height * 2.0 >= 690.0);
        let s = layout(1280.0, 720.0, LayoutMode::Grid, &ids(12), None);
        assert!(s[0].rect.width >= 300.0, "{:?}", s[0].rect);
    }

    #[test]
    fn grid_is_deterministic() {
        let a = layout(1280.0, 720.0, LayoutMode::Grid, &ids(7), None);
        let b = layout(1280.0, 720.0, LayoutMode::Grid, &ids(7), None);
        assert_eq!(a, b);
    }

    #[test]
    fn pip_featured_full_others_small_in_corner() {
        for (w, h) in CANVASES {
            for n in 2..=12 {
                let all = ids(n);
                let s = layout(w, h, LayoutMode::Pip, &all, Some("p1"));
                assert_eq!(s.len(), n);
                assert_eq!(s[0].id, "p1");
                assert_eq!(s[0].index, 0);
                assert_eq!(
                    s[0].rect,
                    Rect {
                        x: 0.0,
                        y: 0.0,
                        width: w,
                        height: h
                    }
                );
                let thumbs = &s[1..];
                let order: Vec<&str> = thumbs.iter().map(|t| t.id.as_str()).collect();
                let expected: Vec<String> = all.iter().filter(|i| *i != "p1").cloned().collect();
                assert_eq!(order, expected);
                for (i, t) in thumbs.iter().enumerate() {
                    assert!(t.index > 0, "thumbnails above the main frame");
                    assert!(t.rect.inside(w, h), "n={n} {t:?}");
                    assert!(t.rect.width <= w / 5.0 + 0.5);
                    assert_eq!(t.rect.width, thumbs[0].rect.width);
                    for o in &thumbs[i + 1..] {
                        assert!(!t.rect.overlaps(&o.rect), "n={n}");
                    }
                }
                // The first thumbnail hugs the bottom-right corner.
                let first = &thumbs[0].rect;
                assert!(first.x + first.width > w * 0.9);
                assert!(first.y + first.height > h * 0.9);
            }
        }
    }

    #[test]
    fn pip_without_featured_uses_first() {
        let s = layout(1280.0, 720.0, LayoutMode::Pip, &ids(3), Some("nobody"));
        assert_eq!(s[0].id, "p0");
        let s = layout(1280.0, 720.0, LayoutMode::Pip, &ids(3), None);
        assert_eq!(s[0].id, "p0");
    }

    #[test]
    fn versus_two_equal_halves() {
        for (w, h) in CANVASES {
            let s = layout(w, h, LayoutMode::Versus, &ids(2), None);
            assert_eq!(s.len(), 2);
            assert_eq!(s[0].rect.width, s[1].rect.width);
            assert_eq!(s[0].rect.height, h);
            assert_eq!(s[0].rect.x, 0.0);
            assert_eq!(s[1].rect.x, s[0].rect.width);
            assert!(!s[0].rect.overlaps(&s[1].rect));
            assert!(s[1].rect.inside(w, h));
        }
        // More than two: nobody is dropped, it becomes a grid.
        let s = layout(1280.0, 720.0, LayoutMode::Versus, &ids(5), None);
        assert_eq!(s, layout(1280.0, 720.0, LayoutMode::Grid, &ids(5), None));
    }

    #[test]
    fn aspect_fit_letterboxes_and_centres() {
        let bx = Rect {
            x: 100.0,
            y: 0.0,
            width: 400.0,
            height: 400.0,
        };
        let r = aspect_fit(1280.0, 720.0, &bx).expect("has size");
        assert_eq!(r.width, 400.0);
        assert_eq!(r.height, 225.0);
        assert_eq!(r.x, 100.0);
        assert_eq!(r.y, 87.5);
        let r = aspect_fit(100.0, 200.0, &bx).expect("has size");
        assert_eq!((r.x, r.width, r.height), (200.0, 200.0, 400.0));
        assert!(aspect_fit(0.0, 10.0, &bx).is_none());
    }

    #[test]
    fn mode_parse_round_trips() {
        for m in [LayoutMode::Grid, LayoutMode::Pip, LayoutMode::Versus] {
            assert_eq!(LayoutMode::parse(m.as_str()), Some(m));
        }
        assert_eq!(LayoutMode::parse("mosaic"), None);
    }

    #[test]
    fn labels_sit_inside_their_tile_and_off_every_other_one() {
        for (w, h) in CANVASES {
            for n in 1..=12 {
                let s = layout(w, h, LayoutMode::Grid, &ids(n), None);
                let boxes: Vec<(Option<Rect>, bool)> = s.iter().map(|t| (Some(t.rect), true)).collect();
                for (i, slot) in s.iter().enumerate() {
                    let Some(font) = label_font_px(&slot.rect) else {
                        assert!(slot.rect.height < 60.0, "n={n}: a {:?} tile gets a label", slot.rect);
                        continue;
                    };
                    let label = name_label(&slot.rect, font, font * 4.0, &boxes[i + 1..]);
                    assert!(slot.rect.covers(&label.rect), "n={n} {label:?} in {:?}", slot.rect);
                    // Bottom-left: in the lower third, in the left half.
                    assert!(label.rect.y > slot.rect.y + slot.rect.height * 2.0 / 3.0, "n={n} {label:?}");
                    assert!(label.rect.x < slot.rect.x + slot.rect.width / 2.0);
                    assert!(label.rect.height < slot.rect.height / 4.0, "a label hides the face: {label:?}");
                    for (j, other) in s.iter().enumerate() {
                        assert!(i == j || !label.rect.overlaps(&other.rect), "n={n}: label {i} on tile {j}");
                    }
                }
            }
        }
    }

    #[test]
    fn the_label_font_follows_the_tile_and_small_tiles_get_none() {
        assert_eq!(label_font_px(&rect(0.0, 0.0, 1280.0, 720.0)), Some(32.0));
        assert_eq!(label_font_px(&rect(0.0, 0.0, 640.0, 360.0)), Some(26.0));
        assert_eq!(label_font_px(&rect(0.0, 0.0, 309.0, 173.0)), Some(12.0));
        // A 12-tile grid on a 640×360 canvas: 10 px is the floor.
        assert_eq!(label_font_px(&rect(0.0, 0.0, 150.0, 84.0)), Some(10.0));
        assert_eq!(label_font_px(&rect(0.0, 0.0, 80.0, 45.0)), None);
        assert_eq!(label_font_px(&rect(0.0, 0.0, 60.0, 200.0)), None, "too narrow");
    }

    #[test]
    fn a_pip_thumbnail_moves_the_main_label_to_the_top() {
        for n in [2, 5, 12] {
            let s = layout(1280.0, 720.0, LayoutMode::Pip, &ids(n), None);
            let boxes: Vec<(Option<Rect>, bool)> = s.iter().map(|t| (Some(t.rect), true)).collect();
            let main = s[0].rect;
            let font = label_font_px(&main).expect("the full frame has a label");
            // A long name: it reaches under the thumbnails at the bottom.
            let label = name_label(&main, font, 2000.0, &boxes[1..]);
            assert!(label.rect.y < 720.0 / 3.0, "n={n} {label:?}");
            for t in &s[1..] {
                assert!(!label.rect.overlaps(&t.rect), "n={n}: under a thumbnail");
            }
            // A thumbnail's own label stays at its bottom.
            let t = s[1].rect;
            if let Some(font) = label_font_px(&t) {
                let label = name_label(&t, font, font * 3.0, &boxes[2..]);
                assert!(t.covers(&label.rect) && label.rect.y > t.y + t.height / 2.0, "{label:?} in {t:?}");
            }
        }
        // Nothing later that overlaps: bottom-left.
        let label = name_label(&rect(0.0, 0.0, 1280.0, 720.0), 32.0, 100.0, &[(None, true)]);
        assert_eq!(label.rect, rect(16.0, 720.0 - 16.0 - 51.0, 100.0 + 26.0, 51.0));
        assert_eq!((label.text_x, label.text_y), (29.0, 720.0 - 16.0 - 25.5));
    }

    #[test]
    fn a_long_name_keeps_to_the_tile() {
        let tile = rect(100.0, 50.0, 309.0, 173.0);
        let font = label_font_px(&tile).expect("label");
        let label = name_label(&tile, font, 5000.0, &[]);
        assert!(tile.covers(&label.rect), "{label:?}");
        assert_eq!(label.max_text_width, 309.0 - 2.0 * (6.0 + 5.0));
        assert_eq!(label.rect.width, label.max_text_width + 10.0);
        // A short one gets a box its size.
        let label = name_label(&tile, font, 30.0, &[]);
        assert_eq!(label.rect.width, 40.0);
    }
}
