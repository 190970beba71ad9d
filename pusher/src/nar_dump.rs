//! Serialising a path as a NAR (Nix ARchive) in process with the `nix-nar` crate, byte for
//! byte what `nix-store --dump` writes: one `nix-store` process per store path cost more than
//! the whole compression of a 200-path closure. The uploader still compares the result with
//! the NarHash Nix recorded, and falls back to `nix-store --dump` on any difference (or on a
//! path `nix-nar` cannot encode, such as a non-UTF-8 name), so nothing wrong is uploaded.

use std::io::{self, Write};
use std::path::Path;

/// Writes the NAR of `path` (a file, a symlink or a directory tree) to `out`.
pub fn write_nar<W: Write + ?Sized>(path: &Path, out: &mut W) -> io::Result<()> {
    let mut encoder = nix_nar::Encoder::new(path).map_err(|e| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("cannot encode {} as a NAR: {e}", path.display()),
        )
    })?;
    // The encoder hands out each NAR token in its own small read; a large buffer turns
    // those into few big writes into the hasher and compressor.
    io::copy(
        &mut io::BufReader::with_capacity(1 << 18, &mut encoder),
        out,
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn nar_of(path: &Path) -> Vec<u8> {
        let mut out = Vec::new();
        write_nar(path, &mut out).unwrap();
        out
    }

    /// A NAR string: length (u64 LE), bytes, zero padding to 8.
    fn s(bytes: &[u8]) -> Vec<u8> {
        let mut out = (bytes.len() as u64).to_le_bytes().to_vec();
        out.extend_from_slice(bytes);
        out.resize(out.len() + (8 - bytes.len() % 8) % 8, 0);
        out
    }

    #[test]
    fn a_single_file_byte_for_byte() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f");
        std::fs::write(&file, b"hello").unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o444)).unwrap();
        let mut expected = Vec::new();
        for part in [
            &b"nix-archive-1"[..],
            b"(",
            b"type",
            b"regular",
            b"contents",
        ] {
            expected.extend(s(part));
        }
        expected.extend(s(b"hello"));
        expected.extend(s(b")"));
        assert_eq!(nar_of(&file), expected);
        assert_eq!(s(b"hello"), b"\x05\0\0\0\0\0\0\0hello\0\0\0");
    }

    /// The same bytes as `nix-store --dump` of the machine's Nix for a tree with every kind
    /// of node, an executable, an empty file, a file of exactly 8 bytes and names whose
    /// bytewise order differs from a case-insensitive one.
    #[test]
    fn matches_nix_store_dump() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("tree");
        std::fs::create_dir_all(root.join("sub/deeper")).unwrap();
        std::fs::write(root.join("B"), b"upper").unwrap();
        std::fs::write(root.join("a"), b"lower").unwrap();
        std::fs::write(root.join("empty"), b"").unwrap();
        std::fs::write(root.join("eight"), b"12345678").unwrap();
        std::fs::write(root.join("sub/deeper/data"), vec![7u8; 100_001]).unwrap();
        let exe = root.join("sub/run");
        std::fs::write(&exe, b"#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::os::unix::fs::symlink("../a", root.join("sub/link")).unwrap();
        let dumped = std::process::Command::new("nix-store")
            .arg("--dump")
            .arg(&root)
            .output()
            .unwrap();
        assert!(dumped.status.success(), "nix-store --dump failed");
        assert_eq!(nar_of(&root), dumped.stdout);
    }
}
