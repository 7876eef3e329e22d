//! The `images` source: a folder (its picture files), a glob (`~/frames/*.png`) or one file,
//! replayed in name order (numbers in names compare as numbers: `frame2` before `frame10`), each
//! picture `repeat_each` times, looping or once. An unreadable picture is skipped with a warning.

use std::cmp::Ordering;
use std::path::{Path, PathBuf};

use image::RgbImage;

use super::{CaptureError, FrameSource};

/// File extensions read as pictures in a folder.
pub const EXTENSIONS: &[&str] = &[
    "png", "jpg", "jpeg", "bmp", "gif", "webp", "tif", "tiff", "pnm", "ppm", "pgm", "tga", "qoi",
];

fn is_picture(p: &Path) -> bool {
    p.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
}

/// Compares names so that digit runs count as numbers ("frame2" < "frame10").
pub fn natural_cmp(a: &str, b: &str) -> Ordering {
    let (mut a, mut b) = (a, b);
    loop {
        match (a.chars().next(), b.chars().next()) {
            (None, None) => return Ordering::Equal,
            (None, _) => return Ordering::Less,
            (_, None) => return Ordering::Greater,
            (Some(x), Some(y)) if x.is_ascii_digit() && y.is_ascii_digit() => {
                let da = a.find(|c: char| !c.is_ascii_digit()).unwrap_or(a.len());
                let db = b.find(|c: char| !c.is_ascii_digit()).unwrap_or(b.len());
                let (na, nb) = (
                    a[..da].trim_start_matches('0'),
                    b[..db].trim_start_matches('0'),
                );
                let o = na.len().cmp(&nb.len()).then_with(|| na.cmp(nb));
                if o != Ordering::Equal {
                    return o;
                }
                a = &a[da..];
                b = &b[db..];
            }
            (Some(x), Some(y)) => {
                if x != y {
                    return x.cmp(&y);
                }
                a = &a[x.len_utf8()..];
                b = &b[y.len_utf8()..];
            }
        }
    }
}

/// The picture files `spec` names, in replay order.
pub fn list(spec: &str) -> Result<Vec<PathBuf>, CaptureError> {
    let p = Path::new(spec);
    let mut files: Vec<PathBuf> = if spec.contains(['*', '?', '[']) {
        let paths = glob::glob(spec)
            .map_err(|e| CaptureError::Images(format!("bad pattern {spec:?}: {e}")))?;
        paths
            .filter_map(Result::ok)
            .filter(|p| p.is_file())
            .collect()
    } else if p.is_dir() {
        std::fs::read_dir(p)
            .map_err(|e| CaptureError::Images(format!("cannot read the folder {spec}: {e}")))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_file() && is_picture(p))
            .collect()
    } else if p.is_file() {
        vec![p.to_path_buf()]
    } else {
        return Err(CaptureError::Images(format!(
            "{spec}: no such folder or file (set `[capture] path` to a folder of pictures, a glob or a picture)"
        )));
    };
    files.sort_by(|a, b| natural_cmp(&a.to_string_lossy(), &b.to_string_lossy()));
    if files.is_empty() {
        return Err(CaptureError::Images(format!(
            "{spec}: no pictures there (looked for {})",
            EXTENSIONS.join(", ")
        )));
    }
    Ok(files)
}

pub struct ImageSequence {
    spec: String,
    files: Vec<PathBuf>,
    next: usize,
    looping: bool,
    repeat_each: u32,
    current: Option<RgbImage>,
    shown: u32,
    failed_in_a_row: usize,
}

impl ImageSequence {
    pub fn open(spec: &str, looping: bool, repeat_each: u32) -> Result<Self, CaptureError> {
        let files = list(spec)?;
        Ok(Self {
            spec: spec.to_string(),
            files,
            next: 0,
            looping,
            repeat_each: repeat_each.max(1),
            current: None,
            shown: 0,
            failed_in_a_row: 0,
        })
    }

    pub fn files(&self) -> &[PathBuf] {
        &self.files
    }
}

impl FrameSource for ImageSequence {
    fn name(&self) -> String {
        format!("images {} ({} files)", self.spec, self.files.len())
    }

    fn live(&self) -> bool {
        false
    }

    fn next_frame(&mut self) -> Result<Option<RgbImage>, CaptureError> {
        if let Some(img) = &self.current {
            if self.shown < self.repeat_each {
                self.shown += 1;
                return Ok(Some(img.clone()));
            }
        }
        loop {
            if self.next == self.files.len() {
                if !self.looping {
                    self.current = None;
                    return Ok(None);
                }
                self.next = 0;
            }
            let path = &self.files[self.next];
            self.next += 1;
            match image::open(path) {
                Ok(img) => {
                    self.failed_in_a_row = 0;
                    let img = img.to_rgb8();
                    self.current = Some(img.clone());
                    self.shown = 1;
                    return Ok(Some(img));
                }
                Err(e) => {
                    tracing::warn!("{}: skipped, not a readable picture: {e}", path.display());
                    self.failed_in_a_row += 1;
                    if self.failed_in_a_row >= self.files.len() {
                        return Err(CaptureError::Images(format!(
                            "{}: none of the {} files is a readable picture",
                            self.spec,
                            self.files.len()
                        )));
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, shade: u8) {
        RgbImage::from_pixel(4, 4, image::Rgb([shade, 0, 0]))
            .save(dir.join(name))
            .unwrap();
    }

    fn shades(src: &mut ImageSequence, n: usize) -> Vec<Option<u8>> {
        (0..n)
            .map(|_| src.next_frame().unwrap().map(|i| i.get_pixel(0, 0)[0]))
            .collect()
    }

    #[test]
    fn natural_order() {
        let mut v = vec!["f10.png", "f2.png", "f1.png", "a.png", "f02b.png"];
        v.sort_by(|a, b| natural_cmp(a, b));
        assert_eq!(v, ["a.png", "f1.png", "f2.png", "f02b.png", "f10.png"]);
    }

    #[test]
    fn folder_in_name_order_once_and_looping() {
        let d = tempfile::tempdir().unwrap();
        write(d.path(), "f10.png", 10);
        write(d.path(), "f2.png", 2);
        write(d.path(), "f1.png", 1);
        std::fs::write(d.path().join("notes.txt"), "not a picture").unwrap();
        let spec = d.path().to_str().unwrap();
        let mut once = ImageSequence::open(spec, false, 1).unwrap();
        assert_eq!(once.files().len(), 3);
        assert_eq!(
            shades(&mut once, 5),
            [Some(1), Some(2), Some(10), None, None]
        );
        let mut looping = ImageSequence::open(spec, true, 2).unwrap();
        assert_eq!(
            shades(&mut looping, 7),
            [
                Some(1),
                Some(1),
                Some(2),
                Some(2),
                Some(10),
                Some(10),
                Some(1)
            ]
        );
    }

    #[test]
    fn glob_and_single_file() {
        let d = tempfile::tempdir().unwrap();
        write(d.path(), "a.png", 1);
        write(d.path(), "b.jpg", 2);
        let g = format!("{}/*.png", d.path().display());
        assert_eq!(list(&g).unwrap().len(), 1);
        let one = d.path().join("b.jpg");
        assert_eq!(list(one.to_str().unwrap()).unwrap(), vec![one.clone()]);
    }

    #[test]
    fn unreadable_pictures_are_skipped() {
        let d = tempfile::tempdir().unwrap();
        write(d.path(), "1.png", 1);
        std::fs::write(d.path().join("2.png"), b"garbage").unwrap();
        write(d.path(), "3.png", 3);
        let mut s = ImageSequence::open(d.path().to_str().unwrap(), false, 1).unwrap();
        assert_eq!(shades(&mut s, 3), [Some(1), Some(3), None]);
    }

    #[test]
    fn nothing_readable_is_an_error() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("1.png"), b"garbage").unwrap();
        let mut s = ImageSequence::open(d.path().to_str().unwrap(), true, 1).unwrap();
        assert!(matches!(s.next_frame(), Err(CaptureError::Images(_))));
        let empty = tempfile::tempdir().unwrap();
        let e = list(empty.path().to_str().unwrap()).unwrap_err();
        assert!(e.to_string().contains("no pictures"), "{e}");
        let e = list("/nonexistent/frames").unwrap_err();
        assert!(e.to_string().contains("no such folder"), "{e}");
    }
}
