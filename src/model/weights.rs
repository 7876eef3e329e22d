//! Checkpoint files: one `model.safetensors` or a sharded set listed in
//! `model.safetensors.index.json` (as FastVLM-7B ships), memory-mapped. Every tensor is fetched by
//! name with its expected shape; a missing tensor, a wrong shape or a tensor nobody asked for is an
//! error naming the file and the tensor. Nothing is ever skipped silently.

use std::cell::RefCell;
use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use candle_core::safetensors::{Load, MmapedSafetensors};
use candle_core::{DType, Device, Tensor};

use super::ModelError;

/// The weight files of one checkpoint directory.
pub struct Checkpoint {
    dir: PathBuf,
    files: Vec<PathBuf>,
    st: Vec<MmapedSafetensors>,
    /// tensor name → index into `files`
    index: HashMap<String, usize>,
    used: RefCell<BTreeSet<String>>,
}

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
            // SAFETY: the file is mapped read-only; like every mmap-based loader we rely on nobody
            // truncating the checkpoint while it is in use.
            let m = unsafe { MmapedSafetensors::new(f) }.map_err(|e| ModelError::Corrupt {
                path: f.clone(),
                msg: format!("not a readable safetensors file: {e}"),
            })?;
            for (name, _) in m.tensors() {
                index.insert(name, i);
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
        Ok(Self {
            dir: dir.to_path_buf(),
            files,
            st,
            index,
            used: RefCell::new(BTreeSet::new()),
        })
    }

    /// The checkpoint directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Whether the checkpoint holds `name`.
    pub fn contains(&self, name: &str) -> bool {
        self.index.contains_key(name)
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
        let view = self.st[i].get(name).ok()?;
        DType::try_from(view.dtype()).ok()
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
        let view = self.st[i].get(name).map_err(|e| ModelError::Corrupt {
            path: self.files[i].clone(),
            msg: e.to_string(),
        })?;
        if view.shape() != shape {
            return Err(ModelError::ShapeMismatch {
                name: name.to_string(),
                file: self.files[i].clone(),
                expected: shape.to_vec(),
                got: view.shape().to_vec(),
            });
        }
        let t = view.load(&Device::Cpu).map_err(|e| ModelError::Corrupt {
            path: self.files[i].clone(),
            msg: format!("tensor `{name}`: {e}"),
        })?;
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
            let mut v: Vec<&String> = self
                .index
                .keys()
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
