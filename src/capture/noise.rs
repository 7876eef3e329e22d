//! Sensor-like noise on any source (`[capture] noise`): a real camera never delivers the same frame
//! twice, and the scene watch must behave the same on pictures or the test pattern with noise as on
//! the clean frames. Each level is moved by a roughly bell-shaped random amount within ±`amplitude`,
//! a new draw for every frame (deterministic: the same sequence on every run).

use image::RgbImage;

use super::{CaptureError, FrameSource};

/// A small fast generator (xorshift64): noise, not cryptography.
#[derive(Debug, Clone)]
pub struct Xorshift(u64);

impl Xorshift {
    pub fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// Adds noise within ±`amplitude` levels to every byte of `img` (the sum of two uniform draws:
/// small moves are common, large ones rare, as with sensor noise).
pub fn add_noise(img: &mut RgbImage, amplitude: u8, rng: &mut Xorshift) {
    if amplitude == 0 {
        return;
    }
    let amp = amplitude as i32;
    let mut bits = 0u64;
    let mut left = 0;
    for v in img.iter_mut() {
        if left == 0 {
            bits = rng.next_u64();
            left = 4;
        }
        let (a, b) = ((bits & 0xff) as i32, ((bits >> 8) & 0xff) as i32);
        bits >>= 16;
        left -= 1;
        // a + b − 255 is within ±255, bell-shaped
        let d = (a + b - 255) * amp / 255;
        *v = (*v as i32 + d).clamp(0, 255) as u8;
    }
}

/// A source with noise added to its frames.
pub struct Noisy {
    inner: Box<dyn FrameSource>,
    amplitude: u8,
    rng: Xorshift,
}

impl Noisy {
    pub fn new(inner: Box<dyn FrameSource>, amplitude: u8) -> Self {
        Self {
            inner,
            amplitude,
            rng: Xorshift::new(0x5ce2e5a7),
        }
    }
}

impl FrameSource for Noisy {
    fn name(&self) -> String {
        format!("{} with noise ±{}", self.inner.name(), self.amplitude)
    }

    fn live(&self) -> bool {
        self.inner.live()
    }

    fn paceable(&self) -> bool {
        self.inner.paceable()
    }

    fn release_when_paused(&self) -> bool {
        self.inner.release_when_paused()
    }

    fn next_frame(&mut self) -> Result<Option<RgbImage>, CaptureError> {
        Ok(self.inner.next_frame()?.map(|mut img| {
            add_noise(&mut img, self.amplitude, &mut self.rng);
            img
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn noise_stays_within_its_amplitude_and_differs_every_frame() {
        let mut rng = Xorshift::new(1);
        let clean = RgbImage::from_pixel(64, 48, image::Rgb([128, 5, 250]));
        let mut a = clean.clone();
        add_noise(&mut a, 10, &mut rng);
        let mut b = clean.clone();
        add_noise(&mut b, 10, &mut rng);
        assert_ne!(a, b);
        assert_ne!(a, clean);
        let mut sum = 0i64;
        for (p, q) in a.iter().zip(clean.iter()) {
            let d = *p as i32 - *q as i32;
            assert!(d.abs() <= 10, "{d}");
            sum += d as i64;
        }
        // centred (the clamped channels pull a little)
        assert!((sum as f64 / a.len() as f64).abs() < 1.5, "{sum}");
        let mut c = clean.clone();
        add_noise(&mut c, 0, &mut rng);
        assert_eq!(c, clean);
    }
}
