//! Output files, checked before any work and written atomically.
//!
//! [`Outputs::check`] refuses, before anything is computed, an output path that is a
//! directory, that is not a regular file (a FIFO, a device such as `/dev/stdout`, a socket),
//! whose folder does not exist or cannot be written, or that is the same file as an input or
//! as another output: after resolving symbolic links and hard links (the same device and
//! inode for existing files, the same canonical folder and file name otherwise).
//!
//! [`Outputs::commit`] then writes all the outputs together: each into a temporary file in
//! its target's folder (on Linux an unnamed `O_TMPFILE`, which vanishes with the process even
//! on `kill -9`), flushed to disk, and only when all of them are complete renamed over their
//! targets. A failure (a full disk, a signal) leaves the old files as they were and no
//! temporary file behind. Files are created with permissions 0666 minus the umask. An output
//! that is a symbolic link to a file is written through: the link stays and its target is
//! replaced.

use crate::{Error, Result};
use std::ffi::OsString;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// Temporary files that exist under a name right now (removed on drop, on error, and by
/// [`remove_temporary_files`] from a signal handler).
static TEMPS: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());
static COUNTER: AtomicU64 = AtomicU64::new(0);

/// Removes every named temporary output file this process has not committed yet. The CLI
/// calls it on SIGINT, SIGTERM and SIGHUP before it exits.
pub fn remove_temporary_files() {
    let paths = match TEMPS.lock() {
        Ok(mut t) => std::mem::take(&mut *t),
        Err(poisoned) => std::mem::take(&mut *poisoned.into_inner()),
    };
    for p in paths {
        let _ = std::fs::remove_file(p);
    }
}

fn register(path: &Path) {
    if let Ok(mut t) = TEMPS.lock() {
        t.push(path.to_path_buf());
    }
}

fn unregister(path: &Path) -> bool {
    match TEMPS.lock() {
        Ok(mut t) => match t.iter().position(|p| p == path) {
            Some(i) => {
                t.swap_remove(i);
                true
            }
            None => false,
        },
        Err(_) => true,
    }
}

/// A named temporary file, removed on drop unless it was renamed into place.
struct TempName(PathBuf);

impl TempName {
    /// A fresh, unused name beside `target`: `.NAME.PID.K.diagfim-tmp`.
    fn beside(target: &Path) -> PathBuf {
        let dir = parent_of(target);
        let name = target
            .file_name()
            .map_or_else(|| "output".into(), |n| n.to_string_lossy().into_owned());
        let k = COUNTER.fetch_add(1, Ordering::Relaxed);
        dir.join(format!(".{name}.{}.{k}.diagfim-tmp", std::process::id()))
    }

    /// Renames the file over `target`; on success it is no longer a temporary file.
    fn rename_onto(self, target: &Path) -> std::io::Result<()> {
        std::fs::rename(&self.0, target)?;
        unregister(&self.0);
        std::mem::forget(self);
        Ok(())
    }
}

impl Drop for TempName {
    fn drop(&mut self) {
        if unregister(&self.0) {
            let _ = std::fs::remove_file(&self.0);
        }
    }
}

/// The folder of `path` ("." for a bare file name).
fn parent_of(path: &Path) -> PathBuf {
    match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// What identifies a file: its (device, inode) when it exists, else the canonical folder
/// and the file name it will get.
#[derive(Clone, Debug, PartialEq, Eq)]
enum FileId {
    #[cfg(unix)]
    Inode(u64, u64),
    #[cfg(not(unix))]
    Canonical(PathBuf),
    Planned(PathBuf, OsString),
}

fn existing_id(path: &Path, meta: &std::fs::Metadata) -> FileId {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        let _ = path;
        FileId::Inode(meta.dev(), meta.ino())
    }
    #[cfg(not(unix))]
    {
        let _ = meta;
        FileId::Canonical(std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf()))
    }
}

/// What kind of file a non-regular file is, for messages.
pub fn describe_kind(meta: &std::fs::Metadata) -> &'static str {
    let t = meta.file_type();
    if t.is_dir() {
        return "a directory";
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if t.is_fifo() {
            return "a FIFO (named pipe)";
        }
        if t.is_char_device() {
            return "a character device";
        }
        if t.is_block_device() {
            return "a block device";
        }
        if t.is_socket() {
            return "a socket";
        }
    }
    if t.is_symlink() {
        return "a symbolic link";
    }
    "not a regular file"
}

/// One checked output: the path as given, the file to replace, and its identity.
#[derive(Clone, Debug)]
struct OutputFile {
    label: String,
    given: PathBuf,
    target: PathBuf,
    id: FileId,
}

fn output_error(path: &Path, msg: impl Into<String>) -> Error {
    Error::Output {
        path: path.to_path_buf(),
        msg: msg.into(),
    }
}

/// Whether `path`, or a symbolic link on the way to its file, lies under /dev (other than
/// the shared-memory folder /dev/shm) or /proc (`/dev/stdout` is a link to
/// `/proc/self/fd/1`, which may be a terminal, a pipe or a file that another process owns).
fn through_special(path: &Path) -> bool {
    let mut p = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    for _ in 0..40 {
        if (p.starts_with("/dev") && !p.starts_with("/dev/shm")) || p.starts_with("/proc") {
            return true;
        }
        match std::fs::read_link(&p) {
            Ok(next) => p = parent_of(&p).join(next),
            Err(_) => return false,
        }
    }
    true
}

fn resolve(label: &str, path: &Path) -> Result<OutputFile> {
    let err = |msg: String| output_error(path, msg);
    if path.as_os_str().is_empty() {
        return Err(err(format!("{label} is empty: give a file path")));
    }
    if cfg!(unix) && through_special(path) {
        return Err(err(format!(
            "{label} leads into /dev or /proc (a device, a terminal or a pipe, not a regular \
             file): diagfim writes results to regular files only; give a file path"
        )));
    }
    let (target, id) = match std::fs::symlink_metadata(path) {
        Ok(m) => {
            let target = if m.file_type().is_symlink() {
                std::fs::canonicalize(path).map_err(|_| {
                    err(format!(
                        "{label} is a symbolic link to '{}', which does not exist; give a real \
                         file path or remove the link",
                        std::fs::read_link(path)
                            .map(|l| l.display().to_string())
                            .unwrap_or_default()
                    ))
                })?
            } else {
                path.to_path_buf()
            };
            let meta = std::fs::metadata(&target).map_err(|e| Error::io("inspect", path, e))?;
            if meta.is_dir() {
                return Err(err(format!(
                    "{label} is a directory; give a file path inside it, e.g. '{}'",
                    path.join("result.safetensors").display()
                )));
            }
            if !meta.is_file() {
                return Err(err(format!(
                    "{label} is {}, not a regular file: diagfim writes results to regular files \
                     only; give a file path",
                    describe_kind(&meta)
                )));
            }
            let id = existing_id(&target, &meta);
            (target, id)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let text = path.as_os_str().to_string_lossy();
            let name = match path.file_name() {
                Some(n) if !text.ends_with('/') && !text.ends_with(std::path::MAIN_SEPARATOR) => n,
                _ => {
                    return Err(err(format!(
                        "{label} names a folder, not a file; give a file path such as \
                         'out/result.safetensors'"
                    )))
                }
            };
            let parent = parent_of(path);
            let dir = std::fs::canonicalize(&parent)
                .ok()
                .filter(|d| d.is_dir())
                .ok_or_else(|| {
                    err(format!(
                        "the folder '{}' does not exist; create it first",
                        parent.display()
                    ))
                })?;
            (dir.join(name), FileId::Planned(dir, name.to_os_string()))
        }
        Err(e) => return Err(Error::io("inspect", path, e)),
    };
    Ok(OutputFile {
        label: label.to_string(),
        given: path.to_path_buf(),
        target,
        id,
    })
}

/// The identity of an input file, `None` when it cannot be inspected (its reader reports
/// that).
fn input_id(path: &Path) -> Option<FileId> {
    let meta = std::fs::metadata(path).ok()?;
    Some(existing_id(path, &meta))
}

/// Checks that a new file can be created in the folder of `target`.
fn probe_folder(out: &OutputFile) -> Result<()> {
    let staged = Staged::create(&out.target).map_err(|e| {
        output_error(
            &out.given,
            format!(
                "cannot create files in the folder '{}' ({e}); choose a folder you can write to",
                parent_of(&out.target).display()
            ),
        )
    })?;
    drop(staged);
    Ok(())
}

/// Output files checked against the inputs and each other, to be written together by
/// [`Outputs::commit`].
#[derive(Clone, Debug)]
pub struct Outputs {
    files: Vec<OutputFile>,
}

impl Outputs {
    /// Checks `outputs` (label such as `--out`, path) against `inputs` (label, path) and each
    /// other; see the module's documentation. Nothing is written.
    pub fn check(inputs: &[(&str, &Path)], outputs: &[(&str, &Path)]) -> Result<Outputs> {
        let files = outputs
            .iter()
            .map(|(label, path)| resolve(label, path))
            .collect::<Result<Vec<_>>>()?;
        for out in &files {
            for (label, path) in inputs {
                if input_id(path).as_ref() == Some(&out.id) {
                    return Err(output_error(
                        &out.given,
                        format!(
                            "{} is the same file as the input {label} '{}'; writing it would \
                             destroy the input: choose another output path",
                            out.label,
                            path.display()
                        ),
                    ));
                }
            }
        }
        for (i, a) in files.iter().enumerate() {
            for b in &files[i + 1..] {
                if a.id == b.id {
                    return Err(output_error(
                        &b.given,
                        format!(
                            "{} and {} name the same file ('{}' and '{}'): give them different \
                             paths",
                            a.label,
                            b.label,
                            a.given.display(),
                            b.given.display()
                        ),
                    ));
                }
            }
        }
        for out in &files {
            probe_folder(out)?;
        }
        Ok(Outputs { files })
    }

    /// Writes `contents[k]` to the k-th output: all into temporary files first, each flushed
    /// to disk, then renamed over their targets one after the other. On an error no output
    /// is changed unless the renames themselves fail, and no temporary file is left.
    pub fn commit(&self, contents: &[&[u8]]) -> Result<()> {
        if contents.len() != self.files.len() {
            return Err(Error::Internal(format!(
                "{} contents for {} output files",
                contents.len(),
                self.files.len()
            )));
        }
        let mut staged = Vec::with_capacity(self.files.len());
        for (out, bytes) in self.files.iter().zip(contents) {
            let mut s =
                Staged::create(&out.target).map_err(|e| Error::io("create", &out.given, e))?;
            s.write(bytes)
                .map_err(|e| Error::io("write", &out.given, e))?;
            staged.push(s);
        }
        for (out, s) in self.files.iter().zip(staged) {
            s.commit(&out.target)
                .map_err(|e| Error::io("replace", &out.given, e))?;
        }
        Ok(())
    }
}

/// Writes `bytes` to `path` atomically (checked as an output of its own, then a temporary
/// file in the same folder, fsync, rename).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    Outputs::check(&[], &[("the output", path)])?.commit(&[bytes])
}

/// A temporary file being written beside its target.
struct Staged {
    file: File,
    /// The name of a named temporary file; `None` for an unnamed (`O_TMPFILE`) one.
    name: Option<TempName>,
}

impl Staged {
    fn create(target: &Path) -> std::io::Result<Staged> {
        #[cfg(target_os = "linux")]
        {
            use std::os::unix::fs::OpenOptionsExt;
            if let Ok(file) = OpenOptions::new()
                .write(true)
                .mode(0o666)
                .custom_flags(libc::O_TMPFILE)
                .open(parent_of(target))
            {
                return Ok(Staged { file, name: None });
            }
        }
        let path = TempName::beside(target);
        let mut opts = OpenOptions::new();
        opts.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(0o666);
        }
        register(&path);
        let name = TempName(path);
        let file = opts.open(&name.0)?;
        Ok(Staged {
            file,
            name: Some(name),
        })
    }

    fn write(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.file.write_all(bytes)?;
        self.file.sync_all()
    }

    /// Gives the file its target's name (replacing the target), then flushes the folder.
    fn commit(self, target: &Path) -> std::io::Result<()> {
        let name = match self.name {
            Some(n) => n,
            None => self.link_beside(target)?,
        };
        name.rename_onto(target)?;
        if let Ok(dir) = File::open(parent_of(target)) {
            let _ = dir.sync_all();
        }
        Ok(())
    }

    /// Links an unnamed temporary file under a temporary name beside `target`.
    #[cfg(target_os = "linux")]
    fn link_beside(&self, target: &Path) -> std::io::Result<TempName> {
        use std::ffi::CString;
        use std::os::unix::ffi::OsStrExt;
        use std::os::unix::io::AsRawFd;
        let path = TempName::beside(target);
        let from = CString::new(format!("/proc/self/fd/{}", self.file.as_raw_fd()))?;
        let to = CString::new(path.as_os_str().as_bytes())?;
        register(&path);
        let name = TempName(path);
        // SAFETY: both strings are valid, NUL-terminated C strings that outlive the call.
        let rc = unsafe {
            libc::linkat(
                libc::AT_FDCWD,
                from.as_ptr(),
                libc::AT_FDCWD,
                to.as_ptr(),
                libc::AT_SYMLINK_FOLLOW,
            )
        };
        if rc != 0 {
            let e = std::io::Error::last_os_error();
            unregister(&name.0);
            std::mem::forget(name);
            return Err(e);
        }
        Ok(name)
    }

    #[cfg(not(target_os = "linux"))]
    fn link_beside(&self, _target: &Path) -> std::io::Result<TempName> {
        Err(std::io::Error::other(
            "unnamed temporary files exist on Linux only",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leftovers(dir: &Path) -> Vec<String> {
        std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.contains("diagfim-tmp"))
            .collect()
    }

    #[test]
    fn writes_atomically_and_replaces() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.bin");
        write_atomic(&p, b"one").unwrap();
        write_atomic(&p, b"two").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"two");
        assert!(leftovers(dir.path()).is_empty());
    }

    #[test]
    fn named_fallback_cleans_up() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("x");
        let path = TempName::beside(&target);
        register(&path);
        std::fs::write(&path, b"partial").unwrap();
        remove_temporary_files();
        assert!(!path.exists());
        let t = TempName(TempName::beside(&target));
        register(&t.0);
        std::fs::write(&t.0, b"partial").unwrap();
        let p = t.0.clone();
        drop(t);
        assert!(!p.exists());
    }

    #[cfg(unix)]
    #[test]
    fn permissions_follow_the_umask() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("perm.bin");
        write_atomic(&p, b"x").unwrap();
        let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        let Some(mask) = status
            .lines()
            .find_map(|l| l.strip_prefix("Umask:"))
            .and_then(|m| u32::from_str_radix(m.trim(), 8).ok())
        else {
            return;
        };
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o666 & !mask);
    }

    #[test]
    fn refuses_same_file_and_directories() {
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("in.npy");
        std::fs::write(&input, b"data").unwrap();
        let e = Outputs::check(&[("--inputs", &input)], &[("--out", &input)]).unwrap_err();
        assert!(e.to_string().contains("same file as the input"), "{e}");
        let e = Outputs::check(&[], &[("--out", dir.path())]).unwrap_err();
        assert!(e.to_string().contains("is a directory"), "{e}");
        let a = dir.path().join("r");
        let b = dir.path().join(".").join("r");
        let e = Outputs::check(&[], &[("--out", &a), ("--summary", &b)]).unwrap_err();
        assert!(e.to_string().contains("name the same file"), "{e}");
        assert_eq!(std::fs::read(&input).unwrap(), b"data");
        for special in ["/dev/null", "/dev/stdout", "/proc/self/fd/1"] {
            let e = Outputs::check(&[], &[("--out", Path::new(special))]).unwrap_err();
            assert!(e.to_string().contains("leads into /dev or /proc"), "{e}");
        }
        if Path::new("/dev/shm").is_dir() {
            assert!(!through_special(Path::new("/dev/shm/diagfim-result.bin")));
        }
    }
}
