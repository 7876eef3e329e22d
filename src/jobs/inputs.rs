//! Finding the images under the files and folders given on the command line: folders are walked
//! recursively (in name order, hidden entries skipped, symbolic links followed once); a file is
//! taken when its extension names an image format or its first bytes are an image signature. Files
//! named explicitly are always taken, so a non-image among them is reported, not silently dropped.

use std::collections::HashSet;
use std::io::Read;
use std::path::{Path, PathBuf};

/// Photo formats people have that the image decoder cannot read: taken (so they are reported by
/// name with what to do), never silently skipped.
const UNSUPPORTED_PHOTO_EXTENSIONS: [&str; 12] = [
    "heic", "heif", "avif", "jxl", "cr2", "cr3", "nef", "arw", "dng", "raf", "orf", "rw2",
];

/// An input that could not be looked at (a missing path, an unreadable folder).
#[derive(Debug, Clone, PartialEq)]
pub struct InputError {
    pub path: PathBuf,
    pub error: String,
}

/// The result of walking the inputs.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Inputs {
    /// Image files, in the order given (each folder in name order), without duplicates.
    pub images: Vec<PathBuf>,
    /// Paths that could not be walked or opened.
    pub errors: Vec<InputError>,
    /// Files found in folders that are not images (by extension and by content).
    pub skipped: usize,
}

/// Walks `paths` (see the module notes).
pub fn collect(paths: &[PathBuf]) -> Inputs {
    let mut w = Walker {
        out: Inputs::default(),
        seen_files: HashSet::new(),
        seen_dirs: HashSet::new(),
    };
    for p in paths {
        match std::fs::metadata(p) {
            Ok(m) if m.is_dir() => w.dir(p),
            Ok(_) => w.take(p.clone()),
            Err(e) => w.out.errors.push(InputError {
                path: p.clone(),
                error: format!("cannot open: {e}"),
            }),
        }
    }
    w.out
}

struct Walker {
    out: Inputs,
    seen_files: HashSet<PathBuf>,
    seen_dirs: HashSet<PathBuf>,
}

impl Walker {
    fn take(&mut self, p: PathBuf) {
        let key = std::fs::canonicalize(&p).unwrap_or_else(|_| p.clone());
        if self.seen_files.insert(key) {
            self.out.images.push(p);
        }
    }

    fn dir(&mut self, dir: &Path) {
        let key = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
        if !self.seen_dirs.insert(key) {
            return; // a link cycle, or the same folder given twice
        }
        let entries = match std::fs::read_dir(dir) {
            Ok(rd) => rd.collect::<Result<Vec<_>, _>>(),
            Err(e) => Err(e),
        };
        let mut entries = match entries {
            Ok(v) => v,
            Err(e) => {
                self.out.errors.push(InputError {
                    path: dir.to_path_buf(),
                    error: format!("cannot read folder: {e}"),
                });
                return;
            }
        };
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            if e.file_name().to_string_lossy().starts_with('.') {
                continue;
            }
            let p = e.path();
            match std::fs::metadata(&p) {
                Ok(m) if m.is_dir() => self.dir(&p),
                Ok(m) if m.is_file() => {
                    if looks_like_image(&p) {
                        self.take(p);
                    } else {
                        self.out.skipped += 1;
                    }
                }
                Ok(_) => self.out.skipped += 1, // sockets, devices, fifos
                Err(err) => self.out.errors.push(InputError {
                    path: p,
                    error: format!("cannot open: {err}"), // e.g. a dangling link
                }),
            }
        }
    }
}

/// Whether a file found in a folder should be treated as an image: by extension, else by its
/// first bytes.
pub fn looks_like_image(p: &Path) -> bool {
    if let Some(ext) = p.extension().and_then(|e| e.to_str()) {
        let ext = ext.to_ascii_lowercase();
        if image::ImageFormat::from_extension(&ext).is_some()
            || UNSUPPORTED_PHOTO_EXTENSIONS.contains(&ext.as_str())
        {
            return true;
        }
    }
    sniff(p)
}

/// Whether the file starts with a known image signature.
fn sniff(p: &Path) -> bool {
    let mut head = [0u8; 32];
    let n = match std::fs::File::open(p) {
        Ok(f) => {
            let mut n = 0;
            let mut f = f.take(head.len() as u64);
            while let Ok(k) = f.read(&mut head[n..]) {
                if k == 0 {
                    break;
                }
                n += k;
            }
            n
        }
        Err(_) => return true, // unreadable: take it, so the error is reported by name
    };
    n > 0 && image::guess_format(&head[..n]).is_ok()
}

/// A hint for files in a format the decoder does not read.
pub fn unsupported_hint(p: &Path) -> Option<String> {
    let ext = p.extension()?.to_str()?.to_ascii_lowercase();
    UNSUPPORTED_PHOTO_EXTENSIONS
        .contains(&ext.as_str())
        .then(|| {
            format!(
                "{} files are not supported; convert them to JPEG or PNG first",
                ext.to_uppercase()
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn png_bytes() -> Vec<u8> {
        let img = image::RgbImage::from_pixel(4, 4, image::Rgb([1, 2, 3]));
        let mut buf = std::io::Cursor::new(vec![]);
        img.write_to(&mut buf, image::ImageFormat::Png).unwrap();
        buf.into_inner()
    }

    #[test]
    fn walks_folders_by_extension_and_content() {
        let d = tempfile::tempdir().unwrap();
        let r = d.path();
        std::fs::create_dir_all(r.join("sub/deeper")).unwrap();
        std::fs::create_dir_all(r.join(".thumbnails")).unwrap();
        std::fs::write(r.join("b.png"), png_bytes()).unwrap();
        std::fs::write(r.join("a.JPG"), b"not really a jpeg").unwrap(); // taken by extension
        std::fs::write(r.join("notes.txt"), b"hello").unwrap(); // skipped
        std::fs::write(r.join("IMG_0001"), png_bytes()).unwrap(); // taken by content
        std::fs::write(r.join("photo.heic"), b"....ftypheic").unwrap(); // taken, reported later
        std::fs::write(r.join("sub/deeper/c.webp"), b"x").unwrap();
        std::fs::write(r.join(".thumbnails/t.png"), png_bytes()).unwrap(); // hidden
        std::fs::write(r.join("empty"), b"").unwrap(); // skipped
        std::os::unix::fs::symlink(r, r.join("sub/loop")).unwrap(); // cycle
        let explicit_txt = r.join("notes.txt");
        let got = collect(&[
            r.to_path_buf(),
            explicit_txt.clone(),
            r.join("b.png"),
            r.join("missing.png"),
        ]);
        let rel: Vec<String> = got
            .images
            .iter()
            .map(|p| p.strip_prefix(r).unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            rel,
            [
                "IMG_0001",
                "a.JPG",
                "b.png",
                "photo.heic",
                "sub/deeper/c.webp",
                "notes.txt"
            ]
        );
        assert_eq!(got.skipped, 2);
        assert_eq!(got.errors.len(), 1);
        assert_eq!(got.errors[0].path, r.join("missing.png"));
        assert!(unsupported_hint(&r.join("photo.heic"))
            .unwrap()
            .contains("HEIC"));
        assert!(unsupported_hint(&r.join("b.png")).is_none());
    }
}
