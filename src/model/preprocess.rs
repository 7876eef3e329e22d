//! Image preprocessing exactly as Apple's FastVLM (`image_aspect_ratio = "pad"`): centre the image on
//! a black square, resize it to R×R with Pillow's antialiased bicubic filter on 8-bit values
//! (`Image.resize(..., BICUBIC)`, reproduced bit for bit: same support, same fixed-point
//! coefficients, horizontal pass then vertical, rounding and clipping to 8 bits after each pass),
//! then divide by 255. No mean / std normalisation.

use image::RgbImage;

use super::vision::FeatureMap;

/// Centres `img` on a black square of side max(w, h), offset rounded down (Apple `expand2square`).
pub fn pad_to_square(img: &RgbImage) -> RgbImage {
    let (w, h) = img.dimensions();
    if w == h {
        return img.clone();
    }
    let s = w.max(h);
    let mut out = RgbImage::new(s, s);
    image::imageops::replace(&mut out, img, ((s - w) / 2) as i64, ((s - h) / 2) as i64);
    out
}

/// Pillow's bicubic kernel (a = −0.5), support 2.
fn bicubic(x: f64) -> f64 {
    const A: f64 = -0.5;
    let x = x.abs();
    if x < 1.0 {
        ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
    } else if x < 2.0 {
        (((x - 5.0) * x + 8.0) * x - 4.0) * A
    } else {
        0.0
    }
}

const PRECISION_BITS: u32 = 32 - 8 - 2;

/// Pillow `precompute_coeffs` + `normalize_coeffs_8bpc`: for each output index, the first input
/// index and the fixed-point weights.
fn coefficients(in_size: usize, out_size: usize) -> (Vec<(usize, usize)>, Vec<i32>, usize) {
    let scale = in_size as f64 / out_size as f64;
    let filterscale = scale.max(1.0);
    let support = 2.0 * filterscale;
    let ksize = support.ceil() as usize * 2 + 1;
    let mut bounds = Vec::with_capacity(out_size);
    let mut kk = vec![0i32; out_size * ksize];
    let mut k = vec![0f64; ksize];
    for xx in 0..out_size {
        let center = (xx as f64 + 0.5) * scale;
        let ss = 1.0 / filterscale;
        // Pillow truncates toward zero after adding 0.5 (C `(int)` cast).
        let xmin = ((center - support + 0.5) as i64).max(0) as usize;
        let xmax = ((center + support + 0.5) as i64).min(in_size as i64) as usize;
        let n = xmax - xmin;
        let mut ww = 0.0;
        for (x, kv) in k.iter_mut().enumerate().take(n) {
            let w = bicubic((x as f64 + xmin as f64 - center + 0.5) * ss);
            *kv = w;
            ww += w;
        }
        for x in 0..ksize {
            let v = if x < n && ww != 0.0 {
                k[x] / ww
            } else if x < n {
                k[x]
            } else {
                0.0
            };
            let f = v * (1u32 << PRECISION_BITS) as f64;
            kk[xx * ksize + x] = if v < 0.0 {
                (-0.5 + f) as i32
            } else {
                (0.5 + f) as i32
            };
        }
        bounds.push((xmin, n));
    }
    (bounds, kk, ksize)
}

fn clip8(v: i64) -> u8 {
    if v >= (1i64 << PRECISION_BITS << 8) {
        255
    } else if v <= 0 {
        0
    } else {
        (v >> PRECISION_BITS) as u8
    }
}

/// Pillow-exact antialiased bicubic resize of an RGB image.
pub fn resize_bicubic(img: &RgbImage, out_w: u32, out_h: u32) -> RgbImage {
    let (in_w, in_h) = (img.width() as usize, img.height() as usize);
    let (ow, oh) = (out_w as usize, out_h as usize);
    let src = img.as_raw();
    // horizontal pass: in_h rows × ow columns
    let tmp: Vec<u8> = if ow != in_w {
        let (bounds, kk, ksize) = coefficients(in_w, ow);
        let mut tmp = vec![0u8; in_h * ow * 3];
        for y in 0..in_h {
            let row = &src[y * in_w * 3..(y + 1) * in_w * 3];
            for (xx, &(xmin, n)) in bounds.iter().enumerate() {
                let k = &kk[xx * ksize..xx * ksize + n];
                for c in 0..3 {
                    let mut ss: i64 = 1 << (PRECISION_BITS - 1);
                    for (x, &kv) in k.iter().enumerate() {
                        ss += row[(xmin + x) * 3 + c] as i64 * kv as i64;
                    }
                    tmp[(y * ow + xx) * 3 + c] = clip8(ss);
                }
            }
        }
        tmp
    } else {
        src.to_vec()
    };
    // vertical pass: oh rows × ow columns
    let out: Vec<u8> = if oh != in_h {
        let (bounds, kk, ksize) = coefficients(in_h, oh);
        let mut out = vec![0u8; oh * ow * 3];
        for (yy, &(ymin, n)) in bounds.iter().enumerate() {
            let k = &kk[yy * ksize..yy * ksize + n];
            for i in 0..ow * 3 {
                let mut ss: i64 = 1 << (PRECISION_BITS - 1);
                for (y, &kv) in k.iter().enumerate() {
                    ss += tmp[(ymin + y) * ow * 3 + i] as i64 * kv as i64;
                }
                out[yy * ow * 3 + i] = clip8(ss);
            }
        }
        out
    } else {
        tmp
    };
    RgbImage::from_raw(out_w, out_h, out).expect("buffer size matches")
}

/// The full FastVLM preprocessing: pad to square, resize to `resolution`², scale to [0, 1], CHW.
pub fn preprocess(img: &RgbImage, resolution: u32) -> FeatureMap {
    let sq = pad_to_square(img);
    let sized = if sq.width() == resolution {
        sq
    } else {
        resize_bicubic(&sq, resolution, resolution)
    };
    let r = resolution as usize;
    let mut data = vec![0f32; 3 * r * r];
    for (i, px) in sized.pixels().enumerate() {
        for c in 0..3 {
            data[c * r * r + i] = px.0[c] as f32 / 255.0;
        }
    }
    FeatureMap::new(3, r, r, data)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pad_centres_with_floor_offset() {
        let img = RgbImage::from_pixel(3, 6, image::Rgb([200, 100, 50]));
        let sq = pad_to_square(&img);
        assert_eq!(sq.dimensions(), (6, 6));
        // offset (6-3)/2 = 1: columns 1..4 hold the image
        assert_eq!(sq.get_pixel(0, 0).0, [0, 0, 0]);
        assert_eq!(sq.get_pixel(1, 0).0, [200, 100, 50]);
        assert_eq!(sq.get_pixel(3, 5).0, [200, 100, 50]);
        assert_eq!(sq.get_pixel(4, 2).0, [0, 0, 0]);
    }

    #[test]
    fn resize_keeps_flat_colours_and_weights_sum_to_one() {
        let img = RgbImage::from_pixel(37, 37, image::Rgb([17, 128, 255]));
        let out = resize_bicubic(&img, 16, 16);
        assert!(out.pixels().all(|p| p.0 == [17, 128, 255]));
        for (i, o) in [(640, 256), (300, 1024), (500, 512), (7, 3)] {
            let (bounds, kk, ksize) = coefficients(i, o);
            for (j, &(_, n)) in bounds.iter().enumerate() {
                let s: i64 = kk[j * ksize..j * ksize + n].iter().map(|&v| v as i64).sum();
                assert!(
                    (s - (1 << PRECISION_BITS)).abs() <= n as i64,
                    "{i}->{o} row {j}: {s}"
                );
            }
        }
    }
}
