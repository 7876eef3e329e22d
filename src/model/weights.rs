//! Checkpoint files: one `model.safetensors` or a sharded set listed in
//! `model.safetensors.index.json` (as FastVLM-7B ships), memory-mapped, plus — in checkpoints
//! written by `scenesay quantize` — `model.gguf` holding the quantized LLM matrices. Every tensor is fetched by
//! name with its expected shape; a missing tensor, a wrong shape or a tensor nobody asked for is an
//! error naming the file and the tensor. Nothing is ever skipped silently.

use std::cell::RefCell;
use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use candle_core::safetensors::Load;
use candle_core::{DType, Device, Tensor};
use safetensors::tensor::{Metadata, TensorInfo, TensorView};

use super::ModelError;

/// One memory-mapped safetensors file and its parsed header.
struct Mapped {
    mmap: memmap2::Mmap,
    /// Offset of the data section (after the length prefix and the JSON header).
    data_start: usize,
    meta: Metadata,
}

impl Mapped {
    fn open(path: &Path) -> Result<Self, String> {
        let file = std::fs::File::open(path).map_err(|e| e.to_string())?;
        // SAFETY: the file is mapped read-only; like every mmap-based loader we rely on nobody
        // truncating the checkpoint while it is in use.
        let mmap = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| e.to_string())?;
        let (n, meta) =
            safetensors::SafeTensors::read_metadata(&mmap).map_err(|e| e.to_string())?;
        Ok(Self {
            mmap,
            data_start: 8 + n,
            meta,
        })
    }

    fn info(&self, name: &str) -> Option<&TensorInfo> {
        self.meta.info(name)
    }

    fn bytes(&self, info: &TensorInfo) -> &[u8] {
        &self.mmap[self.data_start + info.data_offsets.0..self.data_start + info.data_offsets.1]
    }

    /// Drops this tensor's pages from the process's resident memory once they have been copied
    /// (they stay in the page cache and come back from the file if read again), so loading does
    /// not hold the mapped file and the converted weights at the same time.
    fn release(&self, info: &TensorInfo) {
        let page = 4096;
        let start = (self.data_start + info.data_offsets.0).div_ceil(page) * page;
        let end = (self.data_start + info.data_offsets.1) / page * page;
        if end > start {
            // SAFETY: the mapping is read-only and file-backed: dropping pages loses nothing and
            // later reads fault them back in from the file. No reference into the range outlives
            // this call (the tensor was copied out by the caller).
            let _ = unsafe {
                self.mmap.unchecked_advise_range(
                    memmap2::UncheckedAdvice::DontNeed,
                    start,
                    end - start,
                )
            };
        }
    }
}

/// The weight files of one checkpoint directory.
pub struct Checkpoint {
    dir: PathBuf,
    files: Vec<PathBuf>,
    st: Vec<Mapped>,
    /// tensor name → index into `files`
    index: HashMap<String, usize>,
    /// `model.gguf` (quantized matrices), when present.
    gguf: Option<Gguf>,
    used: RefCell<BTreeSet<String>>,
}

/// The quantized part of a checkpoint.
struct Gguf {
    path: PathBuf,
    content: candle_core::quantized::gguf_file::Content,
}

/// File name of the quantized matrices in a checkpoint written by `scenesay quantize`.
pub const GGUF_FILE: &str = "model.gguf";

impl Checkpoint {
    /// Opens `dir/model.safetensors.index.json` (sharded) or `dir/model.safetensors`.
    pub fn open(dir: &Path) -> Result<Self, ModelError> {
        let index_path = dir.join("model.safetensors.index.json");
        let single = dir.join("model.safetensors");
        let (files, declared): (Vec<PathBuf>, Option<HashMap<String, String>>) = if index_path
            .exists()
        {
            let text =
                std::fs::read_to_string(&index_path).map_err(|e| ModelError::MissingFile {
                    path: index_path.clone(),
                    what: "the shard index".into(),
                    cause: Some(e),
                })?;
            let v: serde_json::Value =
                serde_json::from_str(&text).map_err(|e| ModelError::Corrupt {
                    path: index_path.clone(),
                    msg: format!("not valid JSON: {e}"),
                })?;
            let map = v
                .get("weight_map")
                .and_then(|m| m.as_object())
                .ok_or_else(|| ModelError::Corrupt {
                    path: index_path.clone(),
                    msg: "no `weight_map` object".into(),
                })?;
            let mut declared = HashMap::new();
            let mut names = BTreeSet::new();
            for (k, f) in map {
                let f = f.as_str().ok_or_else(|| ModelError::Corrupt {
                    path: index_path.clone(),
                    msg: format!("`weight_map.{k}` is not a file name"),
                })?;
                names.insert(f.to_string());
                declared.insert(k.clone(), f.to_string());
            }
            (
                names.into_iter().map(|n| dir.join(n)).collect(),
                Some(declared),
            )
        } else if single.exists() {
            (vec![single], None)
        } else {
            return Err(ModelError::MissingFile {
                path: single,
                what: "the model weights (model.safetensors, or model.safetensors.index.json with its shards)"
                    .into(),
                cause: None,
            });
        };
        let mut st = Vec::with_capacity(files.len());
        let mut index = HashMap::new();
        for (i, f) in files.iter().enumerate() {
            if !f.exists() {
                return Err(ModelError::MissingFile {
                    path: f.clone(),
                    what: "a weight shard listed in model.safetensors.index.json".into(),
                    cause: None,
                });
            }
            let m = Mapped::open(f).map_err(|e| ModelError::Corrupt {
                path: f.clone(),
                msg: format!("not a readable safetensors file: {e}"),
            })?;
            for name in m.meta.tensors().keys() {
                index.insert(name.clone(), i);
            }
            st.push(m);
        }
        if let Some(declared) = declared {
            for (name, file) in &declared {
                match index.get(name) {
                    Some(&i) if files[i].file_name().map(|f| f.to_string_lossy() == *file) == Some(true) => {}
                    _ => {
                        return Err(ModelError::Corrupt {
                            path: dir.join(file),
                            msg: format!("model.safetensors.index.json places `{name}` in this file, but it is not there"),
                        })
                    }
                }
            }
        }
        let gguf_path = dir.join(GGUF_FILE);
        let gguf = if gguf_path.exists() {
            let mut f = std::fs::File::open(&gguf_path).map_err(|e| ModelError::MissingFile {
                path: gguf_path.clone(),
                what: "the quantized weights".into(),
                cause: Some(e),
            })?;
            let content =
                candle_core::quantized::gguf_file::Content::read(&mut f).map_err(|e| {
                    ModelError::Corrupt {
                        path: gguf_path.clone(),
                        msg: format!("not a readable GGUF file: {e}"),
                    }
                })?;
            for name in content.tensor_infos.keys() {
                if index.contains_key(name) {
                    return Err(ModelError::Corrupt {
                        path: gguf_path.clone(),
                        msg: format!(
                            "tensor `{name}` is in both the GGUF and the safetensors file"
                        ),
                    });
                }
            }
            Some(Gguf {
                path: gguf_path,
                content,
            })
        } else {
            None
        };
        Ok(Self {
            dir: dir.to_path_buf(),
            files,
            st,
            index,
            gguf,
            used: RefCell::new(BTreeSet::new()),
        })
    }

    /// The checkpoint directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Whether the checkpoint holds `name` (plain or quantized).
    pub fn contains(&self, name: &str) -> bool {
        self.index.contains_key(name) || self.is_quantized(name)
    }

    /// Whether `name` is stored quantized (in `model.gguf`).
    pub fn is_quantized(&self, name: &str) -> bool {
        self.gguf
            .as_ref()
            .is_some_and(|g| g.content.tensor_infos.contains_key(name))
    }

    /// Whether this checkpoint has quantized matrices at all.
    pub fn has_quantized(&self) -> bool {
        self.gguf.is_some()
    }

    /// Every plain (safetensors) tensor name with its shape and dtype.
    pub fn plain_tensors(&self) -> Vec<(String, Vec<usize>, DType)> {
        let mut v: Vec<_> = self
            .index
            .iter()
            .filter_map(|(name, &i)| {
                let info = self.st[i].info(name)?;
                Some((
                    name.clone(),
                    info.shape.clone(),
                    DType::try_from(info.dtype).ok()?,
                ))
            })
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }

    /// Loads the quantized matrix `name`, checking its shape.
    pub fn get_quantized(
        &self,
        name: &str,
        shape: &[usize],
    ) -> Result<candle_core::quantized::QTensor, ModelError> {
        let g = self
            .gguf
            .as_ref()
            .ok_or_else(|| ModelError::MissingTensor {
                name: name.to_string(),
                files: format!("{GGUF_FILE} in {}", self.dir.display()),
                expected: shape.to_vec(),
            })?;
        let corrupt = |msg: String| ModelError::Corrupt {
            path: g.path.clone(),
            msg,
        };
        let mut f = std::fs::File::open(&g.path).map_err(|e| corrupt(e.to_string()))?;
        let q = g
            .content
            .tensor(&mut f, name, &Device::Cpu)
            .map_err(|e| corrupt(format!("tensor `{name}`: {e}")))?;
        if q.shape().dims() != shape {
            return Err(ModelError::ShapeMismatch {
                name: name.to_string(),
                file: g.path.clone(),
                expected: shape.to_vec(),
                got: q.shape().dims().to_vec(),
            });
        }
        self.used.borrow_mut().insert(name.to_string());
        Ok(q)
    }

    fn file_names(&self) -> String {
        self.files
            .iter()
            .map(|f| {
                f.file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default()
            })
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// The dtype `name` is stored in.
    pub fn dtype_of(&self, name: &str) -> Option<DType> {
        let &i = self.index.get(name)?;
        DType::try_from(self.st[i].info(name)?.dtype).ok()
    }

    /// Loads `name`, checks its shape, converts it to `dtype`.
    pub fn get(&self, name: &str, shape: &[usize], dtype: DType) -> Result<Tensor, ModelError> {
        let &i = self
            .index
            .get(name)
            .ok_or_else(|| ModelError::MissingTensor {
                name: name.to_string(),
                files: format!("{} in {}", self.file_names(), self.dir.display()),
                expected: shape.to_vec(),
            })?;
        let file = &self.st[i];
        let info = file.info(name).ok_or_else(|| ModelError::Corrupt {
            path: self.files[i].clone(),
            msg: format!("tensor `{name}` is listed but has no header entry"),
        })?;
        if info.shape != shape {
            return Err(ModelError::ShapeMismatch {
                name: name.to_string(),
                file: self.files[i].clone(),
                expected: shape.to_vec(),
                got: info.shape.clone(),
            });
        }
        let corrupt = |e: String| ModelError::Corrupt {
            path: self.files[i].clone(),
            msg: format!("tensor `{name}`: {e}"),
        };
        let view = TensorView::new(info.dtype, info.shape.clone(), file.bytes(info))
            .map_err(|e| corrupt(e.to_string()))?;
        let t = view
            .load(&Device::Cpu)
            .map_err(|e| corrupt(e.to_string()))?;
        file.release(info);
        self.used.borrow_mut().insert(name.to_string());
        Ok(if t.dtype() == dtype {
            t
        } else {
            t.to_dtype(dtype)?
        })
    }

    /// Loads `name` as a flat `f32` vector (row-major), checking its shape.
    pub fn get_f32(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>, ModelError> {
        Ok(self
            .get(name, shape, DType::F32)?
            .flatten_all()?
            .to_vec1::<f32>()?)
    }

    /// Marks tensors as deliberately unused (for example Apple's MobileCLIP `head.proj`).
    pub fn ignore(&self, name: &str) {
        if self.contains(name) {
            self.used.borrow_mut().insert(name.to_string());
        }
    }

    /// Errors if the checkpoint holds tensors that no module asked for: with a misnamed prefix that is
    /// how a silently wrong model would otherwise slip through.
    pub fn ensure_all_used(&self) -> Result<(), ModelError> {
        let used = self.used.borrow();
        let unused: Vec<&String> = {
            let quantized = self.gguf.iter().flat_map(|g| g.content.tensor_infos.keys());
            let mut v: Vec<&String> = self
                .index
                .keys()
                .chain(quantized)
                .filter(|k| !used.contains(*k) && !k.ends_with("num_batches_tracked"))
                .collect();
            v.sort();
            v
        };
        if unused.is_empty() {
            Ok(())
        } else {
            Err(ModelError::UnexpectedTensors {
                dir: self.dir.clone(),
                count: unused.len(),
                examples: unused.iter().take(8).map(|s| s.to_string()).collect(),
            })
        }
    }
}
