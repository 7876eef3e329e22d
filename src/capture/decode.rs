//! Camera buffers to RGB, as pure functions: YUYV (4:2:2), NV12 (4:2:0, a luma plane then
//! interleaved chroma), GREY (an infrared or mono camera: each level becomes a grey pixel), and
//! MJPEG (decoded by nokhwa's libjpeg-turbo decoder). YUV is BT.601 limited range, as UVC cameras
//! send it. A buffer that cannot be decoded is an error saying why (too short, not a JPEG, cut
//! off): the camera skips it and counts it, it does not reopen the device for it.

use image::RgbImage;

use super::negotiate::FourCc;

/// The layout of one buffer: pixel format, size and bytes per line (0: the tightest).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    pub fourcc: FourCc,
    pub width: u32,
    pub height: u32,
    pub stride: u32,
}

impl Layout {
    pub fn new(fourcc: FourCc, width: u32, height: u32) -> Self {
        Self {
            fourcc,
            width,
            height,
            stride: 0,
        }
    }

    fn stride_or(&self, tight: usize) -> usize {
        (self.stride as usize).max(tight)
    }
}

/// Why a buffer was not decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{fourcc} {width}x{height}: {why}", fourcc = .layout.fourcc.name(), width = .layout.width, height = .layout.height)]
pub struct DecodeError {
    pub layout: Layout,
    pub why: String,
}

fn err(layout: &Layout, why: impl Into<String>) -> DecodeError {
    DecodeError {
        layout: *layout,
        why: why.into(),
    }
}

fn clamp(v: i32) -> u8 {
    v.clamp(0, 255) as u8
}

/// One pixel from BT.601 limited-range Y, Cb, Cr.
#[inline]
pub fn yuv_to_rgb(y: u8, u: u8, v: u8) -> [u8; 3] {
    let c = 298 * (y as i32 - 16);
    let d = u as i32 - 128;
    let e = v as i32 - 128;
    [
        clamp((c + 409 * e + 128) >> 8),
        clamp((c - 100 * d - 208 * e + 128) >> 8),
        clamp((c + 516 * d + 128) >> 8),
    ]
}

fn too_short(layout: &Layout, got: usize, need: usize) -> DecodeError {
    err(
        layout,
        format!("the buffer holds {got} bytes, {need} are needed"),
    )
}

fn check_size(layout: &Layout) -> Result<(usize, usize), DecodeError> {
    if layout.width == 0 || layout.height == 0 {
        return Err(err(layout, "an empty frame size"));
    }
    Ok((layout.width as usize, layout.height as usize))
}

/// YUYV 4:2:2: Y0 U Y1 V for every two pixels.
pub fn yuyv(data: &[u8], layout: &Layout) -> Result<RgbImage, DecodeError> {
    let (w, h) = check_size(layout)?;
    let stride = layout.stride_or(w.div_ceil(2) * 4);
    let need = stride * (h - 1) + w.div_ceil(2) * 4;
    if data.len() < need {
        return Err(too_short(layout, data.len(), need));
    }
    let mut out = vec![0u8; w * h * 3];
    for (row, dst) in out.chunks_exact_mut(w * 3).enumerate() {
        let src = &data[row * stride..];
        for x in 0..w {
            let pair = &src[(x / 2) * 4..(x / 2) * 4 + 4];
            let y = if x % 2 == 0 { pair[0] } else { pair[2] };
            dst[x * 3..x * 3 + 3].copy_from_slice(&yuv_to_rgb(y, pair[1], pair[3]));
        }
    }
    Ok(RgbImage::from_raw(layout.width, layout.height, out).expect("sized above"))
}

/// NV12: a full-size luma plane, then a half-size plane of interleaved Cb Cr.
pub fn nv12(data: &[u8], layout: &Layout) -> Result<RgbImage, DecodeError> {
    let (w, h) = check_size(layout)?;
    let stride = layout.stride_or(w.div_ceil(2) * 2);
    let chroma_rows = h.div_ceil(2);
    let need = stride * h + stride * (chroma_rows - 1) + w.div_ceil(2) * 2;
    if data.len() < need {
        return Err(too_short(layout, data.len(), need));
    }
    let (luma, chroma) = data.split_at(stride * h);
    let mut out = vec![0u8; w * h * 3];
    for (row, dst) in out.chunks_exact_mut(w * 3).enumerate() {
        let ys = &luma[row * stride..];
        let uv = &chroma[(row / 2) * stride..];
        for x in 0..w {
            let c = (x / 2) * 2;
            dst[x * 3..x * 3 + 3].copy_from_slice(&yuv_to_rgb(ys[x], uv[c], uv[c + 1]));
        }
    }
    Ok(RgbImage::from_raw(layout.width, layout.height, out).expect("sized above"))
}

/// GREY: one byte a pixel, full range; each level becomes a grey pixel.
pub fn grey(data: &[u8], layout: &Layout) -> Result<RgbImage, DecodeError> {
    let (w, h) = check_size(layout)?;
    let stride = layout.stride_or(w);
    let need = stride * (h - 1) + w;
    if data.len() < need {
        return Err(too_short(layout, data.len(), need));
    }
    let mut out = Vec::with_capacity(w * h * 3);
    for row in 0..h {
        for &v in &data[row * stride..row * stride + w] {
            out.extend_from_slice(&[v, v, v]);
        }
    }
    Ok(RgbImage::from_raw(layout.width, layout.height, out).expect("sized above"))
}

/// Whether a JPEG buffer is whole: it starts with SOI and, padding aside, ends with EOI (a buffer
/// cut off by a USB hiccup does not).
pub fn jpeg_is_whole(data: &[u8]) -> Result<(), &'static str> {
    if data.len() < 4 || data[0] != 0xFF || data[1] != 0xD8 {
        return Err("not a JPEG picture (no start marker)");
    }
    // cameras pad their buffers: look for the end marker near the end
    let end = data.iter().rposition(|&b| b != 0).unwrap_or(0);
    let tail_from = end.saturating_sub(64 * 1024);
    if !data[tail_from..=end].windows(2).any(|w| w == [0xFF, 0xD9]) {
        return Err("a JPEG picture cut off (no end marker)");
    }
    Ok(())
}

/// MJPEG (or JPEG): one JPEG picture, decoded by nokhwa (libjpeg-turbo); it must have the
/// negotiated size.
pub fn mjpeg(data: &[u8], layout: &Layout) -> Result<RgbImage, DecodeError> {
    check_size(layout)?;
    jpeg_is_whole(data).map_err(|why| err(layout, why))?;
    let decoded = std::panic::catch_unwind(|| nokhwa::utils::mjpeg_to_rgb(data, false))
        .map_err(|_| err(layout, "the JPEG decoder failed"))?
        .map_err(|e| err(layout, format!("undecodable JPEG: {e}")))?;
    let need = layout.width as usize * layout.height as usize * 3;
    if decoded.len() != need {
        return Err(err(
            layout,
            format!(
                "the JPEG picture has {} pixels, not {}x{}",
                decoded.len() / 3,
                layout.width,
                layout.height
            ),
        ));
    }
    Ok(RgbImage::from_raw(layout.width, layout.height, decoded).expect("length checked"))
}

/// Decodes one buffer of `layout`; an empty buffer is an error too.
pub fn decode(data: &[u8], layout: &Layout) -> Result<RgbImage, DecodeError> {
    if data.is_empty() {
        return Err(err(layout, "an empty buffer"));
    }
    match layout.fourcc {
        FourCc::MJPG | FourCc::JPEG => mjpeg(data, layout),
        FourCc::YUYV => yuyv(data, layout),
        FourCc::NV12 => nv12(data, layout),
        FourCc::GREY => grey(data, layout),
        other => Err(err(layout, format!("{other} is not decoded by scenesay"))),
    }
}
