//! `file://` listing and reading that never leaves the store's directory: a symbolic link to a
//! file is followed only when its target lies inside the store's prefix (and inside every
//! confining root the reader set, see [`crate::Store::confine`]); links to directories are not
//! descended into (no cycles, no second name for a file); anything else is skipped when
//! listing and refused when read. A pipeline author who can write into a store directory can therefore
//! not make a reader list or read the reader's own files (its ServiceAccount token, /etc, /proc)
//! through a link.
//!
//! Reads check the path of the file actually opened (`/proc/self/fd/N`), not the path asked for,
//! so a link swapped between a check and the open cannot escape either. Listings keep
//! object_store's conventions: keys relative to the prefix, '/'-separated, sorted; in-progress
//! staging files (`name#123`) are not objects; e-tags are `inode-mtime-size` in hex.

use std::fs::{File, Metadata};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use chrono::{DateTime, Utc};

use crate::ObjectInfo;

/// Why a local operation failed; mapped to [`crate::StoreError`] by the caller, which knows the
/// URI.
#[derive(Debug)]
pub(crate) enum LocalError {
    NotFound,
    Escapes,
    TooMany,
    TooLarge(u64),
    Io(std::io::Error),
}

impl From<std::io::Error> for LocalError {
    fn from(e: std::io::Error) -> Self {
        if e.kind() == std::io::ErrorKind::NotFound {
            LocalError::NotFound
        } else {
            LocalError::Io(e)
        }
    }
}

/// The directories a path must stay inside: the prefix's own canonical form, and the
/// canonical confining roots (none: only the prefix).
pub(crate) struct Bounds {
    prefix: PathBuf,
    confine: Vec<PathBuf>,
}

impl Bounds {
    /// The bounds of `prefix` (resolved now) within `confine` (already canonical). The prefix
    /// itself must resolve inside the confining roots.
    pub(crate) fn new(prefix: &Path, confine: &[PathBuf]) -> Result<Bounds, LocalError> {
        let canonical = std::fs::canonicalize(prefix)?;
        let bounds = Bounds {
            prefix: canonical.clone(),
            confine: confine.to_vec(),
        };
        if !bounds.allows(&canonical) {
            return Err(LocalError::Escapes);
        }
        Ok(bounds)
    }

    fn allows(&self, real: &Path) -> bool {
        real.starts_with(&self.prefix)
            && (self.confine.is_empty() || self.confine.iter().any(|r| real.starts_with(r)))
    }
}

/// object_store's convention: `name#123` is a staging file of a write in progress.
fn is_staging(name: &str) -> bool {
    match name.split_once('#') {
        Some((_, suffix)) => !suffix.is_empty() && suffix.bytes().all(|b| b.is_ascii_digit()),
        None => false,
    }
}

fn info(key: String, meta: &Metadata) -> ObjectInfo {
    let mtime = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
        .unwrap_or_default();
    let inode = std::os::unix::fs::MetadataExt::ino(meta);
    ObjectInfo {
        key,
        size: meta.len(),
        etag: Some(format!(
            "{inode:x}-{:x}-{:x}",
            mtime.as_micros(),
            meta.len()
        )),
        last_modified: DateTime::<Utc>::from(meta.modified().unwrap_or(SystemTime::UNIX_EPOCH)),
    }
}

/// Every file under `prefix`, recursively, sorted by key; a prefix that is a file is that one
/// object with the empty key. Links are followed only to files inside the bounds; linked
/// directories are skipped. More than `max` objects is an error.
pub(crate) fn list(
    prefix: &Path,
    confine: &[PathBuf],
    max: Option<usize>,
) -> Result<Vec<ObjectInfo>, LocalError> {
    let bounds = Bounds::new(prefix, confine)?;
    let meta = std::fs::metadata(&bounds.prefix)?;
    if meta.is_file() {
        return Ok(vec![info(String::new(), &meta)]);
    }
    let mut out = Vec::new();
    let mut stack: Vec<(PathBuf, String)> = vec![(bounds.prefix.clone(), String::new())];
    while let Some((dir, key_prefix)) = stack.pop() {
        for entry in std::fs::read_dir(&dir)? {
            let entry = entry?;
            let Ok(name) = entry.file_name().into_string() else {
                continue; // not UTF-8: not addressable as a key
            };
            let key = format!("{key_prefix}{name}");
            let path = entry.path();
            let link = std::fs::symlink_metadata(&path)?;
            let real = if link.file_type().is_symlink() {
                match std::fs::canonicalize(&path) {
                    Ok(real) if bounds.allows(&real) => real,
                    _ => continue, // dangling or outside the store: not an object
                }
            } else {
                path.clone()
            };
            let meta = match std::fs::metadata(&real) {
                Ok(m) => m,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(LocalError::Io(e)),
            };
            if meta.is_dir() {
                if !link.file_type().is_symlink() {
                    stack.push((real, format!("{key}/")));
                }
            } else if meta.is_file() && !is_staging(&name) {
                if max.is_some_and(|max| out.len() >= max) {
                    return Err(LocalError::TooMany);
                }
                out.push(info(key, &meta));
            }
        }
    }
    out.sort_by(|a, b| a.key.cmp(&b.key));
    Ok(out)
}

/// The bytes of the file at `path` (inside `prefix`), at most `max` of them. The file opened
/// is checked, not the name: its real path must lie inside the bounds.
pub(crate) fn read(
    prefix: &Path,
    confine: &[PathBuf],
    path: &Path,
    max: Option<u64>,
) -> Result<Vec<u8>, LocalError> {
    let bounds = Bounds::new(prefix, confine)?;
    let file = File::open(path)?;
    let fd = std::os::fd::AsRawFd::as_raw_fd(&file);
    let real = std::fs::read_link(format!("/proc/self/fd/{fd}"))?;
    if !bounds.allows(&real) {
        return Err(LocalError::Escapes);
    }
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(LocalError::NotFound);
    }
    if let Some(max) = max
        && meta.len() > max
    {
        return Err(LocalError::TooLarge(meta.len()));
    }
    let limit = max.unwrap_or(u64::MAX);
    let mut out = Vec::with_capacity(usize::try_from(meta.len().min(64 << 20)).unwrap_or(0));
    file.take(limit.saturating_add(1)).read_to_end(&mut out)?;
    if out.len() as u64 > limit {
        return Err(LocalError::TooLarge(out.len() as u64));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn staging_files_are_not_objects() {
        assert!(is_staging("a.csv#12"));
        assert!(!is_staging("a.csv"));
        assert!(!is_staging("a#b.csv"));
        assert!(!is_staging("a.csv#"));
    }

    #[test]
    fn links_inside_the_prefix_are_followed_and_links_out_of_it_are_not() {
        let outside = tempfile::tempdir().expect("tempdir");
        std::fs::write(outside.path().join("token"), "canary-7d1").expect("write");
        let store = tempfile::tempdir().expect("tempdir");
        let root = store.path();
        std::fs::create_dir(root.join("sub")).expect("mkdir");
        std::fs::write(root.join("sub/a.csv"), "x\n1\n").expect("write");
        symlink(root.join("sub/a.csv"), root.join("inner.csv")).expect("link");
        symlink(root.join("sub"), root.join("again")).expect("link");
        symlink(root, root.join("sub/loop")).expect("link");
        symlink(outside.path().join("token"), root.join("token.csv")).expect("link");
        symlink(outside.path(), root.join("escape")).expect("link");
        symlink("/proc/self", root.join("proc")).expect("link");
        let keys: Vec<String> = list(root, &[], None)
            .expect("lists")
            .into_iter()
            .map(|o| o.key)
            .collect();
        assert!(keys.contains(&"inner.csv".to_string()), "{keys:?}");
        assert!(keys.contains(&"sub/a.csv".to_string()), "{keys:?}");
        assert_eq!(
            keys.len(),
            2,
            "linked directories are not descended: {keys:?}"
        );
        assert!(
            keys.iter().all(|k| !k.contains("token")
                && !k.starts_with("escape")
                && !k.starts_with("proc")),
            "{keys:?}"
        );
        assert!(read(root, &[], &root.join("inner.csv"), None).is_ok());
        assert!(matches!(
            read(root, &[], &root.join("token.csv"), None),
            Err(LocalError::Escapes)
        ));
        assert!(matches!(
            read(root, &[], &root.join("escape/token"), None),
            Err(LocalError::Escapes)
        ));
    }

    #[test]
    fn a_prefix_outside_the_confining_roots_is_refused() {
        let allowed = tempfile::tempdir().expect("tempdir");
        let other = tempfile::tempdir().expect("tempdir");
        std::fs::write(other.path().join("a.csv"), "x\n").expect("write");
        symlink(other.path(), allowed.path().join("link")).expect("link");
        let confine = [std::fs::canonicalize(allowed.path()).expect("canonical")];
        assert!(matches!(
            list(other.path(), &confine, None),
            Err(LocalError::Escapes)
        ));
        assert!(
            matches!(
                list(&allowed.path().join("link"), &confine, None),
                Err(LocalError::Escapes)
            ),
            "a prefix that is a link out of the roots is refused too"
        );
        assert!(list(allowed.path(), &confine, None).is_ok());
    }
}
