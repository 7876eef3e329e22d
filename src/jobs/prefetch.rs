//! Decoding images ahead of the model: a small pool of threads reads, decodes, pads and resizes the
//! next images (FastVLM's own preprocessing up to the 8-bit R×R square) while the model works on
//! the current one. Results come back in input order; at most `jobs + 1` images are in flight, so
//! memory stays bounded however long the list is.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::thread::JoinHandle;
use std::time::Instant;

use anyhow::Context;
use crossbeam_channel::{bounded, unbounded, Receiver, Sender};
use image::RgbImage;

use crate::model::preprocess::{pad_to_square, resize_bicubic};

/// An image ready for the model.
#[derive(Debug, Clone)]
pub struct Prepared {
    /// The image padded to a square and resized to R×R exactly as the model's preprocessing does
    /// (so the model's own preprocessing of it changes nothing).
    pub square: RgbImage,
    /// The original size.
    pub width: u32,
    pub height: u32,
    /// Time spent reading, decoding and resizing, in milliseconds.
    pub image_ms: f64,
}

/// Reads and prepares one image for a model at `resolution`.
pub fn prepare(path: &Path, resolution: u32) -> anyhow::Result<Prepared> {
    let t = Instant::now();
    if let Some(hint) = super::inputs::unsupported_hint(path) {
        anyhow::bail!("{}: {hint}", path.display());
    }
    let img = image::ImageReader::open(path)
        .with_context(|| format!("{}: cannot open", path.display()))?
        .with_guessed_format()
        .with_context(|| format!("{}: cannot read", path.display()))?
        .decode()
        .with_context(|| format!("{}: not a readable image", path.display()))?
        .to_rgb8();
    let (width, height) = img.dimensions();
    let sq = pad_to_square(&img);
    drop(img);
    let square = if sq.width() == resolution {
        sq
    } else {
        resize_bicubic(&sq, resolution, resolution)
    };
    Ok(Prepared {
        square,
        width,
        height,
        image_ms: t.elapsed().as_secs_f64() * 1e3,
    })
}

/// `prepare`, turning a panic inside a decoder (a hostile file) into an error for that file.
fn prepare_guarded(path: &Path, resolution: u32) -> anyhow::Result<Prepared> {
    std::panic::catch_unwind(|| prepare(path, resolution)).unwrap_or_else(|_| {
        Err(anyhow::anyhow!(
            "{}: the image decoder crashed on this file",
            path.display()
        ))
    })
}

type Job = (PathBuf, u32, Sender<anyhow::Result<Prepared>>);

/// An iterator over `(path, prepared image or error)`, in input order, decoding up to `jobs`
/// images in parallel ahead of the consumer. `jobs = 0` decodes on the calling thread.
pub struct Prefetcher {
    todo: std::vec::IntoIter<PathBuf>,
    pending: VecDeque<(PathBuf, Receiver<anyhow::Result<Prepared>>)>,
    work: Option<Sender<Job>>,
    workers: Vec<JoinHandle<()>>,
    window: usize,
    resolution: u32,
}

impl Prefetcher {
    pub fn new(paths: Vec<PathBuf>, resolution: u32, jobs: usize) -> Self {
        let mut workers = vec![];
        let mut work = None;
        if jobs > 0 {
            let (tx, rx) = unbounded::<Job>();
            for i in 0..jobs {
                let rx = rx.clone();
                let spawned = std::thread::Builder::new()
                    .name(format!("prefetch-{i}"))
                    .spawn(move || {
                        for (path, res, reply) in rx {
                            // the consumer may have gone (Ctrl-C): nothing to do then
                            let _ = reply.send(prepare_guarded(&path, res));
                        }
                    });
                match spawned {
                    Ok(h) => workers.push(h),
                    Err(e) => tracing::warn!("cannot start a decoding thread: {e}"),
                }
            }
            if !workers.is_empty() {
                work = Some(tx);
            }
        }
        Self {
            todo: paths.into_iter(),
            pending: VecDeque::new(),
            window: jobs + 1,
            work,
            workers,
            resolution,
        }
    }

    fn fill(&mut self) {
        let Some(work) = &self.work else { return };
        while self.pending.len() < self.window {
            let Some(path) = self.todo.next() else { break };
            let (tx, rx) = bounded(1);
            if work.send((path.clone(), self.resolution, tx)).is_err() {
                break;
            }
            self.pending.push_back((path, rx));
        }
    }
}

impl Iterator for Prefetcher {
    type Item = (PathBuf, anyhow::Result<Prepared>);

    fn next(&mut self) -> Option<Self::Item> {
        if self.work.is_none() {
            let path = self.todo.next()?;
            let r = prepare_guarded(&path, self.resolution);
            return Some((path, r));
        }
        self.fill();
        let (path, rx) = self.pending.pop_front()?;
        let r = rx.recv().unwrap_or_else(|_| {
            Err(anyhow::anyhow!(
                "{}: the decoding thread stopped",
                path.display()
            ))
        });
        self.fill();
        Some((path, r))
    }
}

impl Drop for Prefetcher {
    fn drop(&mut self) {
        // closing the queue ends the workers after their current image
        self.work = None;
        self.pending.clear();
        for h in self.workers.drain(..) {
            let _ = h.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prepared_square_is_what_the_model_would_compute() {
        let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/images/portrait_300x500.png");
        let pre = prepare(&p, 256).unwrap();
        assert_eq!((pre.width, pre.height), (300, 500));
        assert_eq!(pre.square.dimensions(), (256, 256));
        let direct = crate::model::preprocess::preprocess(&image::open(&p).unwrap().to_rgb8(), 256);
        let via = crate::model::preprocess::preprocess(&pre.square, 256);
        assert_eq!(direct.data, via.data);
    }

    #[test]
    fn results_come_back_in_order_with_errors_in_place() {
        let d = tempfile::tempdir().unwrap();
        let mut paths = vec![];
        for i in 0..7 {
            let p = d.path().join(format!("{i}.png"));
            if i == 3 {
                std::fs::write(&p, b"\x89PNG\r\n\x1a\ntruncated").unwrap();
            } else {
                image::RgbImage::from_pixel(10 + i, 5, image::Rgb([9, 9, 9]))
                    .save(&p)
                    .unwrap();
            }
            paths.push(p);
        }
        for jobs in [0, 1, 3] {
            let got: Vec<_> = Prefetcher::new(paths.clone(), 64, jobs).collect();
            assert_eq!(
                got.iter().map(|(p, _)| p.clone()).collect::<Vec<_>>(),
                paths
            );
            for (i, (_, r)) in got.iter().enumerate() {
                match r {
                    Ok(pre) => assert_eq!(pre.width, 10 + i as u32),
                    Err(e) => {
                        assert_eq!(i, 3);
                        assert!(format!("{e:#}").contains("3.png"), "{e:#}");
                    }
                }
            }
            assert!(got[3].1.is_err());
        }
        // stopping early does not hang
        let mut it = Prefetcher::new(paths, 64, 2);
        assert!(it.next().is_some());
        drop(it);
    }
}
