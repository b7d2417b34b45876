//! Where served bytes come from: the local directory ([`SafeRoot`], opened
//! beneath its handle and never outside it) and the hashes of what it holds
//! ([`HashCache`], BLAKE3 per file version). The file service
//! ([`crate::service`]) is built on these; front-ends never touch them
//! directly.

mod hash_cache;
mod local;
mod upload;

pub use hash_cache::{HashCache, HashKey};
pub use local::{
    fsync_dir_of, set_mtime, system_time_ns, validate_path, Entry, FileInfo, PathError,
    RootOptions, SafeRoot,
};
pub use upload::{
    is_temp_name, Committed, Upload, UploadError, UploadSpec, WriteRules, TEMP_PREFIX,
};
