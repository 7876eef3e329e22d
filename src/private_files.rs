//! Opening the daemon's own files safely where other users could interfere: the narration log and
//! the control socket's folder, above all their fallback under the shared temporary folder
//! (`/tmp/scenesay-UID`, used when neither `XDG_RUNTIME_DIR` nor `HOME` is set). Another user can
//! create that name first — as a folder of their own, or as a symbolic link to a file of ours — so:
//!
//! - a private folder must be a real folder (not a link), owned by us, closed to group and others;
//! - a file is opened with `O_NOFOLLOW` (a planted link is refused, never followed);
//! - a folder others can write to must be sticky (else anyone may swap our file), and a file in it
//!   must be a regular file owned by us;
//! - a folder owned by another user (not root) is refused.

use std::fs::File;
use std::io::{Error, ErrorKind};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;

/// The effective user id of this process.
pub fn own_uid() -> u32 {
    // SAFETY: geteuid cannot fail.
    unsafe { libc::geteuid() }
}

fn refuse(path: &Path, why: impl std::fmt::Display) -> Error {
    Error::new(
        ErrorKind::PermissionDenied,
        format!("{}: {why}; scenesay will not use it", path.display()),
    )
}

/// Creates the folder `dir` (mode 0700; its parent must exist) or checks the one that is there: a
/// real folder, not a symbolic link, owned by this user, closed to group and others.
pub fn private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    match std::fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e),
    }
    let m = std::fs::symlink_metadata(dir)?;
    if m.file_type().is_symlink() {
        return Err(refuse(
            dir,
            "is a symbolic link (someone may have planted it to redirect scenesay's files); remove it",
        ));
    }
    if !m.is_dir() {
        return Err(refuse(dir, "is not a folder"));
    }
    let me = own_uid();
    if m.uid() != me {
        return Err(refuse(
            dir,
            format!(
                "belongs to user {}, not to you ({me}); remove it or set XDG_RUNTIME_DIR / HOME",
                m.uid()
            ),
        ));
    }
    if m.mode() & 0o077 != 0 {
        return Err(refuse(
            dir,
            format!(
                "has mode {:o}: others can enter it; `chmod 700` it",
                m.mode() & 0o7777
            ),
        ));
    }
    Ok(())
}

/// Whether files in the folder `dir` can be trusted: it is owned by this user or root, and if group
/// or others may write to it, it is sticky. Returns whether it is shared (writable by others).
pub fn check_folder(dir: &Path) -> std::io::Result<bool> {
    let m = std::fs::metadata(dir)?;
    let me = own_uid();
    if m.uid() != me && m.uid() != 0 {
        return Err(refuse(
            dir,
            format!("belongs to user {}, not to you ({me})", m.uid()),
        ));
    }
    let shared = m.mode() & 0o022 != 0;
    if shared && m.mode() & 0o1000 == 0 {
        return Err(refuse(
            dir,
            format!(
                "has mode {:o}: others may replace files in it",
                m.mode() & 0o7777
            ),
        ));
    }
    Ok(shared)
}

/// Opens `path` for appending, creating it private (0600), without following a symbolic link; in
/// a folder others may write to, the file must also be a regular file of ours.
pub fn open_append(path: &Path) -> std::io::Result<File> {
    let shared = match path.parent().filter(|d| !d.as_os_str().is_empty()) {
        Some(d) => check_folder(d)?,
        None => check_folder(Path::new("."))?,
    };
    let f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| {
            if e.raw_os_error() == Some(libc::ELOOP) {
                refuse(
                    path,
                    "is a symbolic link (someone may have planted it to make scenesay write elsewhere); remove it",
                )
            } else {
                e
            }
        })?;
    if shared {
        let m = f.metadata()?;
        if !m.is_file() {
            return Err(refuse(path, "is not a regular file"));
        }
        if m.uid() != own_uid() {
            return Err(refuse(
                path,
                format!("belongs to user {}, not to you", m.uid()),
            ));
        }
    }
    Ok(f)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn a_private_dir_is_created_0700_and_a_link_is_refused() {
        let t = tempfile::tempdir().unwrap();
        let d = t.path().join("scenesay-x");
        private_dir(&d).unwrap();
        let mode = std::fs::metadata(&d).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
        private_dir(&d).unwrap(); // again: fine
        let link = t.path().join("scenesay-link");
        std::os::unix::fs::symlink(&d, &link).unwrap();
        let e = private_dir(&link).unwrap_err().to_string();
        assert!(e.contains("symbolic link"), "{e}");
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o755)).unwrap();
        let e = private_dir(&d).unwrap_err().to_string();
        assert!(e.contains("mode 755"), "{e}");
    }

    #[test]
    fn a_planted_link_is_not_followed() {
        let t = tempfile::tempdir().unwrap();
        let target = t.path().join("victim");
        std::fs::write(&target, "precious\n").unwrap();
        let p = t.path().join("narration.jsonl");
        std::os::unix::fs::symlink(&target, &p).unwrap();
        let e = open_append(&p).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::PermissionDenied);
        assert!(e.to_string().contains("symbolic link"), "{e}");
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "precious\n");
    }

    #[test]
    fn a_world_writable_folder_must_be_sticky() {
        let t = tempfile::tempdir().unwrap();
        std::fs::set_permissions(t.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
        let e = open_append(&t.path().join("n.jsonl"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("others may replace"), "{e}");
        std::fs::set_permissions(t.path(), std::fs::Permissions::from_mode(0o1777)).unwrap();
        open_append(&t.path().join("n.jsonl")).unwrap();
        let mode = std::fs::metadata(t.path().join("n.jsonl"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
