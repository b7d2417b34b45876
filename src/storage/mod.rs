//! Where served bytes come from: the local directory ([`SafeRoot`], opened
//! beneath its handle and never outside it), an object store's bucket
//! ([`ObjectRoot`], keys confined to a prefix: `object`; an opened object,
//! [`ObjectBlob`]: `object_blob`; uploads into it: `object_upload`), and
//! the hashes of what they hold ([`HashCache`], BLAKE3 per file version). The file service
//! ([`crate::service`]) is built on these; front-ends never touch them
//! directly.

mod hash_cache;
mod local;
mod object;
mod object_blob;
mod object_upload;
mod upload;

pub use hash_cache::{HashCache, HashKey};
pub use local::{
    fsync_dir_of, set_mtime, system_time_ns, validate_path, Entry, FileInfo, PathError,
    RootOptions, SafeRoot,
};
pub use object::{is_object_url, ObjectConfig, ObjectError, ObjectRoot, OBJECT_DEV};
pub use object_blob::{ByteStream, ObjectBlob};
pub use object_upload::ObjectUpload;
pub use upload::{
    is_temp_name, Committed, Upload, UploadError, UploadSpec, WriteRules, TEMP_PREFIX,
};
