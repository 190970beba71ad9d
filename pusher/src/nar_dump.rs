//! Serialising a path as a NAR (Nix ARchive) in process, byte for byte what `nix-store
//! --dump` writes: one process per store path cost more than the whole compression of a
//! 200-path closure. The uploader still compares the result with the NarHash Nix recorded,
//! so a difference is caught, never uploaded.
//!
//! The format: every string is its length (u64, little-endian), its bytes and zero padding
//! to a multiple of 8; a node is `( type regular [executable ""] contents <bytes> )`,
//! `( type symlink target <target> )` or `( type directory entry ( name N node <node> ) … )`
//! with entries sorted bytewise by name, all after the magic `nix-archive-1`.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// Writes the NAR of `path` (a file, a symlink or a directory tree) to `out`.
pub fn write_nar<W: Write + ?Sized>(path: &Path, out: &mut W) -> io::Result<()> {
    string(out, b"nix-archive-1")?;
    node(path, out)
}

fn string<W: Write + ?Sized>(out: &mut W, bytes: &[u8]) -> io::Result<()> {
    out.write_all(&(bytes.len() as u64).to_le_bytes())?;
    out.write_all(bytes)?;
    padding(out, bytes.len() as u64)
}

fn padding<W: Write + ?Sized>(out: &mut W, len: u64) -> io::Result<()> {
    let pad = (8 - len % 8) % 8;
    out.write_all(&[0u8; 8][..pad as usize])
}

fn node<W: Write + ?Sized>(path: &Path, out: &mut W) -> io::Result<()> {
    let meta = std::fs::symlink_metadata(path)?;
    let kind = meta.file_type();
    string(out, b"(")?;
    string(out, b"type")?;
    if kind.is_symlink() {
        string(out, b"symlink")?;
        string(out, b"target")?;
        string(out, std::fs::read_link(path)?.as_os_str().as_bytes())?;
    } else if kind.is_file() {
        string(out, b"regular")?;
        // Nix looks at the owner's execute bit only.
        if meta.permissions().mode() & 0o100 != 0 {
            string(out, b"executable")?;
            string(out, b"")?;
        }
        string(out, b"contents")?;
        contents(path, meta.len(), out)?;
    } else if kind.is_dir() {
        string(out, b"directory")?;
        let mut names = std::fs::read_dir(path)?
            .map(|entry| entry.map(|e| e.file_name()))
            .collect::<io::Result<Vec<_>>>()?;
        names.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
        for name in names {
            string(out, b"entry")?;
            string(out, b"(")?;
            string(out, b"name")?;
            string(out, name.as_bytes())?;
            string(out, b"node")?;
            node(&path.join(&name), out)?;
            string(out, b")")?;
        }
    } else {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "{} is neither a file, a directory nor a symlink: a NAR cannot hold it",
                path.display()
            ),
        ));
    }
    string(out, b")")
}

/// A regular file's contents: its size, its bytes (exactly that many) and padding.
fn contents<W: Write + ?Sized>(path: &Path, len: u64, out: &mut W) -> io::Result<()> {
    out.write_all(&len.to_le_bytes())?;
    let copied = io::copy(&mut File::open(path)?.take(len), out)?;
    if copied != len {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!(
                "{} shrank while being read ({copied} of {len} bytes)",
                path.display()
            ),
        ));
    }
    padding(out, len)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nar_of(path: &Path) -> Vec<u8> {
        let mut out = Vec::new();
        write_nar(path, &mut out).unwrap();
        out
    }

    fn s(bytes: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        string(&mut out, bytes).unwrap();
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
