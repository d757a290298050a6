//! A writer for the `newc` cpio format, the one the kernel unpacks as an initramfs.
//!
//! Layout of one entry: a 110-byte ASCII header ("070701" + 13 fields of 8 hex digits), the
//! NUL-terminated name padded to a multiple of 4 (counting the header), then the data padded to
//! a multiple of 4. The archive ends with an entry named "TRAILER!!!".

use std::io::{self, Write};

/// Builds a newc archive in memory.
pub(crate) struct Archive {
    out: Vec<u8>,
    next_ino: u32,
}

const S_IFDIR: u32 = 0o040000;
const S_IFREG: u32 = 0o100000;
const S_IFLNK: u32 = 0o120000;
const S_IFCHR: u32 = 0o020000;

impl Archive {
    pub(crate) fn new() -> Self {
        Archive {
            out: Vec::new(),
            next_ino: 1,
        }
    }

    /// A directory entry (parents must be added first).
    pub(crate) fn dir(&mut self, path: &str) {
        self.entry(path, S_IFDIR | 0o755, 2, (0, 0), &[]);
    }

    /// A regular file.
    pub(crate) fn file(&mut self, path: &str, mode: u32, data: &[u8]) {
        self.entry(path, S_IFREG | (mode & 0o7777), 1, (0, 0), data);
    }

    /// A symbolic link to `target`.
    pub(crate) fn symlink(&mut self, path: &str, target: &str) {
        self.entry(path, S_IFLNK | 0o777, 1, (0, 0), target.as_bytes());
    }

    /// A character device node.
    pub(crate) fn char_dev(&mut self, path: &str, mode: u32, major: u32, minor: u32) {
        self.entry(path, S_IFCHR | (mode & 0o7777), 1, (major, minor), &[]);
    }

    /// Ends the archive and returns its bytes.
    pub(crate) fn finish(mut self) -> Vec<u8> {
        self.entry("TRAILER!!!", 0, 1, (0, 0), &[]);
        self.out
    }

    fn entry(&mut self, path: &str, mode: u32, nlink: u32, rdev: (u32, u32), data: &[u8]) {
        let name = path.trim_start_matches('/');
        let ino = self.next_ino;
        self.next_ino += 1;
        let namesize = name.len() + 1;
        let fields = [
            ino,
            mode,
            0, // uid
            0, // gid
            nlink,
            0, // mtime: fixed, so the same inputs give the same archive
            u32::try_from(data.len()).unwrap_or(u32::MAX),
            0,
            0,
            rdev.0,
            rdev.1,
            u32::try_from(namesize).unwrap_or(u32::MAX),
            0, // check
        ];
        // Writing to a Vec cannot fail.
        let _ = self.write_header(&fields);
        self.out.extend_from_slice(name.as_bytes());
        self.out.push(0);
        self.pad();
        self.out.extend_from_slice(data);
        self.pad();
    }

    fn write_header(&mut self, fields: &[u32; 13]) -> io::Result<()> {
        self.out.write_all(b"070701")?;
        for f in fields {
            write!(self.out, "{f:08x}")?;
        }
        Ok(())
    }

    fn pad(&mut self) {
        while self.out.len() % 4 != 0 {
            self.out.push(0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_are_aligned_and_headers_are_110_bytes() {
        let mut a = Archive::new();
        a.file("/init", 0o755, b"#!/bin/sh\n");
        let bytes = a.finish();
        assert_eq!(&bytes[..6], b"070701");
        // name "init\0" = 5 bytes after a 110-byte header: padded to 116.
        assert_eq!(&bytes[110..115], b"init\0");
        assert_eq!(&bytes[116..126], b"#!/bin/sh\n");
        // The trailer starts at the next multiple of 4 after the data.
        assert_eq!(&bytes[128..134], b"070701");
        assert_eq!(bytes.len() % 4, 0);
        // filesize field of the first entry (7th field) is 10.
        assert_eq!(&bytes[6 + 6 * 8..6 + 7 * 8], b"0000000a");
    }

    #[test]
    fn archive_unpacks_with_gnu_cpio() {
        let Ok(status) = std::process::Command::new("cpio").arg("--version").output() else {
            // Host tools are installed by provision.sh; without cpio this check has no peer.
            eprintln!("SKIP: cpio not installed on the host");
            return;
        };
        assert!(status.status.success());
        let mut a = Archive::new();
        a.dir("/bin");
        a.file("/bin/hello", 0o755, b"hello");
        a.symlink("/bin/link", "hello");
        let bytes = a.finish();
        let dir = std::env::temp_dir().join(format!("cpio-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut child = std::process::Command::new("cpio")
            .args(["-id", "--quiet"])
            .current_dir(&dir)
            .stdin(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(&bytes).unwrap();
        assert!(child.wait().unwrap().success());
        assert_eq!(std::fs::read(dir.join("bin/hello")).unwrap(), b"hello");
        assert_eq!(
            std::fs::read_link(dir.join("bin/link")).unwrap().to_str(),
            Some("hello")
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
