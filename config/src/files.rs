//! Opening the files that decide where the credential goes and whom the
//! proxy trusts: the configuration, the password file and the CA file.
//!
//! Each is opened without blocking and must be a regular file: a FIFO would
//! hang start-up (and a reload) until someone writes to it, and a device
//! could be read forever. Whoever can change the configuration can send the
//! credential to a host of their choosing, and whoever can change the CA
//! file can add a trust anchor for that host, so neither may be writable by
//! group or others.

use std::fs::{File, Metadata, OpenOptions};
use std::io::Read;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Why one of those files was refused. Never holds file content.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    /// The file could not be opened or read.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A FIFO, device, socket or directory.
    #[error("{} is a {kind}, not a regular file; point it at a regular file", path.display())]
    NotRegular {
        /// The file.
        path: PathBuf,
        /// What it is instead.
        kind: &'static str,
    },
    /// Group or others may change it.
    #[error(
        "{} has mode {mode:04o}, so group or others can change it; run `chmod go-w {}`",
        path.display(),
        path.display()
    )]
    Writable {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// Larger than the cap for its kind.
    #[error("{} is larger than {max} bytes; is it the right file?", path.display())]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// The cap.
        max: u64,
    },
}

/// Opens `path` for reading without blocking and refuses anything but a
/// regular file. `O_NONBLOCK` matters only for the open itself (a FIFO
/// without a writer would otherwise block it); reads of a regular file
/// ignore it.
pub(crate) fn open_regular(path: &Path) -> Result<(File, Metadata), FileError> {
    let io = |source| FileError::Io {
        path: path.to_path_buf(),
        source,
    };
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path);
    let file = match file {
        Ok(f) => f,
        // A socket cannot be opened at all (ENXIO): name it for what it is.
        Err(e) if e.raw_os_error() == Some(libc::ENXIO) => match std::fs::metadata(path) {
            Ok(m) if m.file_type().is_socket() => {
                return Err(FileError::NotRegular {
                    path: path.to_path_buf(),
                    kind: "socket",
                })
            }
            _ => return Err(io(e)),
        },
        Err(e) => return Err(io(e)),
    };
    let meta = file.metadata().map_err(io)?;
    let t = meta.file_type();
    let kind = if t.is_file() {
        return Ok((file, meta));
    } else if t.is_dir() {
        "directory"
    } else if t.is_fifo() {
        "FIFO"
    } else if t.is_socket() {
        "socket"
    } else if t.is_char_device() || t.is_block_device() {
        "device"
    } else {
        "special file"
    };
    Err(FileError::NotRegular {
        path: path.to_path_buf(),
        kind,
    })
}

/// Reads a file that must be regular, not writable by group or others, and
/// at most `max` bytes long.
pub fn read_protected(path: &Path, max: u64) -> Result<Vec<u8>, FileError> {
    let (file, meta) = open_regular(path)?;
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o022 != 0 {
        return Err(FileError::Writable {
            path: path.to_path_buf(),
            mode,
        });
    }
    let mut bytes = Vec::with_capacity(meta.len().min(max) as usize);
    file.take(max + 1)
        .read_to_end(&mut bytes)
        .map_err(|source| FileError::Io {
            path: path.to_path_buf(),
            source,
        })?;
    if bytes.len() as u64 > max {
        return Err(FileError::TooLarge {
            path: path.to_path_buf(),
            max,
        });
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixListener;

    fn with_mode(dir: &Path, mode: u32) -> PathBuf {
        let path = dir.join("f");
        std::fs::write(&path, b"x").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        path
    }

    #[test]
    fn a_fifo_is_refused_without_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("fifo");
        let made = std::process::Command::new("mkfifo")
            .arg(&path)
            .status()
            .unwrap();
        assert!(made.success());
        // A blocking open would never return here: no writer exists.
        let err = read_protected(&path, 10).unwrap_err();
        assert!(
            matches!(err, FileError::NotRegular { kind: "FIFO", .. }),
            "{err}"
        );
        assert!(err.to_string().contains("not a regular file"), "{err}");
    }

    #[test]
    fn sockets_devices_and_directories_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("sock");
        let _listener = UnixListener::bind(&sock).unwrap();
        for (path, kind) in [
            (sock.as_path(), "socket"),
            (Path::new("/dev/zero"), "device"),
            (dir.path(), "directory"),
        ] {
            match read_protected(path, 10) {
                Err(FileError::NotRegular { kind: k, .. }) => assert_eq!(k, kind),
                other => panic!("{}: {other:?}", path.display()),
            }
        }
    }

    #[test]
    fn group_or_other_writable_is_refused_and_read_only_is_not() {
        let dir = tempfile::tempdir().unwrap();
        for mode in [0o620, 0o602, 0o666] {
            let err = read_protected(&with_mode(dir.path(), mode), 10).unwrap_err();
            assert!(
                matches!(err, FileError::Writable { mode: m, .. } if m == mode),
                "{err}"
            );
            assert!(err.to_string().contains("chmod go-w"), "{err}");
        }
        assert_eq!(
            read_protected(&with_mode(dir.path(), 0o644), 10).unwrap(),
            b"x"
        );
    }

    #[test]
    fn over_the_cap_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("big");
        std::fs::write(&path, [b'a'; 11]).unwrap();
        assert!(matches!(
            read_protected(&path, 10),
            Err(FileError::TooLarge { max: 10, .. })
        ));
        std::fs::write(&path, [b'a'; 10]).unwrap();
        assert_eq!(read_protected(&path, 10).unwrap().len(), 10);
    }
}
