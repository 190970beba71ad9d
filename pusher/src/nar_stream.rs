//! Turning a store path into a compressed NAR file: the NAR (serialised in process, or by
//! `nix-store --dump`) streamed through zstd (or xz) into a temp file, with NarHash/NarSize computed on the uncompressed stream
//! and FileHash/FileSize on the compressed one, in one pass and constant memory.

use std::io::{self, Read, Write};
use std::path::Path;
use std::process::Stdio;

use anyhow::{Context, Result, bail};
use sha2::{Digest, Sha256};
use tempfile::NamedTempFile;

use crate::nar_dump::write_nar;
use crate::nix_cli::dump_command;

/// A compressed NAR waiting in a temp file.
#[derive(Debug)]
pub struct CompressedNar {
    /// The compressed bytes (deleted when dropped).
    pub file: NamedTempFile,
    /// `sha256:<nix32>` of the uncompressed NAR.
    pub nar_hash: String,
    /// Uncompressed size.
    pub nar_size: u64,
    /// `sha256:<nix32>` of the compressed file.
    pub file_hash: String,
    /// Compressed size.
    pub file_size: u64,
}

/// How NARs are compressed: the narinfo's `Compression:` value and the file's extension
/// follow from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// zstd at this level (1-19); fast, Nix ≥ 2.3 reads it.
    Zstd(i32),
    /// xz at this preset (0-9); smaller and much slower, read by every Nix.
    Xz(u32),
}

impl Compression {
    /// The narinfo `Compression:` value.
    pub fn name(self) -> &'static str {
        match self {
            Compression::Zstd(_) => "zstd",
            Compression::Xz(_) => "xz",
        }
    }

    /// The NAR file's extension after `.nar` (Nix's own: `.nar.zst`, `.nar.xz`).
    pub fn extension(self) -> &'static str {
        match self {
            Compression::Zstd(_) => "zst",
            Compression::Xz(_) => "xz",
        }
    }
}

/// A compressing writer of either kind, so one loop streams into both.
enum Encoder<W: Write> {
    Zstd(zstd::stream::write::Encoder<'static, W>),
    Xz(liblzma::write::XzEncoder<W>),
}

impl<W: Write> Encoder<W> {
    fn new(out: W, compression: Compression) -> io::Result<Self> {
        Ok(match compression {
            Compression::Zstd(level) => {
                Encoder::Zstd(zstd::stream::write::Encoder::new(out, level)?)
            }
            Compression::Xz(preset) => Encoder::Xz(liblzma::write::XzEncoder::new(out, preset)),
        })
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        match self {
            Encoder::Zstd(e) => e.write_all(buf),
            Encoder::Xz(e) => e.write_all(buf),
        }
    }

    fn finish(self) -> io::Result<W> {
        match self {
            Encoder::Zstd(e) => e.finish(),
            Encoder::Xz(e) => e.finish(),
        }
    }
}

/// A writer that hashes and counts what passes through.
struct Hashing<W> {
    inner: W,
    hash: Sha256,
    size: u64,
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hash.update(&buf[..n]);
        self.size += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

fn nix32(hash: Sha256) -> String {
    format!("sha256:{}", nix_base32::to_nix_base32(&hash.finalize()))
}

/// Where the uncompressed NAR goes: hashed and counted (NarHash, NarSize), reported for
/// progress, and compressed into the hashing file writer (FileHash, FileSize).
struct NarSink<W: Write, F: FnMut(u64)> {
    encoder: Encoder<Hashing<W>>,
    nar_hash: Sha256,
    nar_size: u64,
    on_bytes: F,
}

impl<W: Write, F: FnMut(u64)> Write for NarSink<W, F> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.encoder.write_all(buf)?;
        self.nar_hash.update(buf);
        self.nar_size += buf.len() as u64;
        (self.on_bytes)(buf.len() as u64);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Compresses the NAR that `produce` writes into a temp file in `dir`, telling `on_bytes`
/// how many NAR bytes went by (for progress).
fn compress_with(
    produce: impl FnOnce(&mut dyn Write) -> io::Result<()>,
    compression: Compression,
    dir: &Path,
    on_bytes: impl FnMut(u64),
) -> Result<CompressedNar> {
    let file = NamedTempFile::new_in(dir).context("creating a temp file for a NAR")?;
    let out = Hashing {
        inner: io::BufWriter::new(file.reopen().context("opening the NAR temp file")?),
        hash: Sha256::new(),
        size: 0,
    };
    let encoder = Encoder::new(out, compression)
        .with_context(|| format!("starting {}", compression.name()))?;
    // NAR framing comes in 8-byte pieces: batch them before hashing and compressing.
    let mut sink = io::BufWriter::with_capacity(
        256 * 1024,
        NarSink {
            encoder,
            nar_hash: Sha256::new(),
            nar_size: 0,
            on_bytes,
        },
    );
    produce(&mut sink).context("making the NAR")?;
    let sink = sink
        .into_inner()
        .map_err(|e| e.into_error())
        .context("compressing the NAR")?;
    let mut out = sink
        .encoder
        .finish()
        .with_context(|| format!("finishing {}", compression.name()))?;
    out.flush().context("writing the NAR temp file")?;
    Ok(CompressedNar {
        file,
        nar_hash: nix32(sink.nar_hash),
        nar_size: sink.nar_size,
        file_hash: nix32(out.hash),
        file_size: out.size,
    })
}

/// Compresses `reader` (a NAR stream) into a temp file in `dir`, telling `on_bytes` how
/// many NAR bytes went by (for progress).
pub fn compress(
    reader: &mut impl Read,
    compression: Compression,
    dir: &Path,
    on_bytes: impl FnMut(u64),
) -> Result<CompressedNar> {
    compress_with(
        |out| io::copy(reader, out).map(drop),
        compression,
        dir,
        on_bytes,
    )
}

/// How the NAR of a store path is made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NarSource {
    /// Serialised in this process (`nar_dump.rs`): no process per path.
    InProcess,
    /// `nix-store --dump`: Nix's own serialiser, the reference when the two disagree.
    NixStoreDump,
}

/// Makes the NAR of `store_path` from `source` and compresses it (blocking; run it on a
/// blocking thread).
pub fn dump_and_compress(
    store_path: &str,
    source: NarSource,
    compression: Compression,
    dir: &Path,
    on_bytes: impl FnMut(u64),
) -> Result<CompressedNar> {
    match source {
        NarSource::InProcess => compress_with(
            |out| write_nar(Path::new(store_path), out),
            compression,
            dir,
            on_bytes,
        )
        .with_context(|| format!("compressing the NAR of {store_path}")),
        NarSource::NixStoreDump => nix_store_dump(store_path, compression, dir, on_bytes),
    }
}

fn nix_store_dump(
    store_path: &str,
    compression: Compression,
    dir: &Path,
    on_bytes: impl FnMut(u64),
) -> Result<CompressedNar> {
    let mut child = dump_command(store_path)
        .to_command()
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("running nix-store --dump (is Nix installed?)")?;
    let mut stdout = child
        .stdout
        .take()
        .context("nix-store --dump has no stdout")?;
    let result = compress(&mut stdout, compression, dir, on_bytes);
    drop(stdout);
    let out = child
        .wait_with_output()
        .context("waiting for nix-store --dump")?;
    if !out.status.success() {
        bail!(
            "`nix-store --dump {store_path}` failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    result.with_context(|| format!("compressing the NAR of {store_path}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_both_streams_and_decompresses_back() {
        let dir = tempfile::tempdir().unwrap();
        let data: Vec<u8> = (0..300_000u32).map(|i| (i % 7) as u8).collect();
        let mut seen = 0;
        let nar = compress(
            &mut data.as_slice(),
            Compression::Zstd(3),
            dir.path(),
            |n| seen += n,
        )
        .unwrap();
        assert_eq!(nar.nar_size, data.len() as u64);
        assert_eq!(
            seen, nar.nar_size,
            "every NAR byte is reported for progress"
        );
        assert_eq!(
            nar.nar_hash,
            format!(
                "sha256:{}",
                nix_base32::to_nix_base32(&Sha256::digest(&data))
            )
        );
        let compressed = std::fs::read(nar.file.path()).unwrap();
        assert_eq!(nar.file_size, compressed.len() as u64);
        assert!(
            nar.file_size < nar.nar_size / 10,
            "repetitive data compresses"
        );
        assert_eq!(
            nar.file_hash,
            format!(
                "sha256:{}",
                nix_base32::to_nix_base32(&Sha256::digest(&compressed))
            )
        );
        assert_eq!(zstd::decode_all(compressed.as_slice()).unwrap(), data);
    }

    #[test]
    fn empty_string_hash_matches_nix() {
        // `nix hash to-base32 sha256-47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=`
        let dir = tempfile::tempdir().unwrap();
        let nar = compress(&mut [].as_slice(), Compression::Zstd(3), dir.path(), |_| {}).unwrap();
        assert_eq!(
            nar.nar_hash,
            "sha256:0mdqa9w1p6cmli6976v4wi0sw9r4p5prkj7lzfd1877wk11c9c73"
        );
    }

    #[test]
    fn xz_round_trips_and_hashes_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let data: Vec<u8> = (0..200_000u32).map(|i| (i % 13) as u8).collect();
        let nar = compress(&mut data.as_slice(), Compression::Xz(6), dir.path(), |_| {}).unwrap();
        let compressed = std::fs::read(nar.file.path()).unwrap();
        assert_eq!(&compressed[..6], b"\xfd7zXZ\x00", "an xz stream");
        assert_eq!(nar.file_size, compressed.len() as u64);
        assert_eq!(
            nar.file_hash,
            format!(
                "sha256:{}",
                nix_base32::to_nix_base32(&Sha256::digest(&compressed))
            )
        );
        let mut back = Vec::new();
        liblzma::read::XzDecoder::new(compressed.as_slice())
            .read_to_end(&mut back)
            .unwrap();
        assert_eq!(back, data);
    }

    #[test]
    fn names_and_extensions_are_nix_s() {
        assert_eq!(
            (
                Compression::Zstd(3).name(),
                Compression::Zstd(3).extension()
            ),
            ("zstd", "zst")
        );
        assert_eq!(
            (Compression::Xz(6).name(), Compression::Xz(6).extension()),
            ("xz", "xz")
        );
    }

    #[test]
    fn in_process_and_nix_store_dump_agree() {
        let dir = tempfile::tempdir().unwrap();
        let tree = dir.path().join("tree");
        std::fs::create_dir_all(tree.join("d")).unwrap();
        std::fs::write(tree.join("d/f"), vec![3u8; 70_000]).unwrap();
        std::os::unix::fs::symlink("d/f", tree.join("l")).unwrap();
        let path = tree.to_str().unwrap();
        let ours = dump_and_compress(
            path,
            NarSource::InProcess,
            Compression::Zstd(3),
            dir.path(),
            |_| {},
        )
        .unwrap();
        let nix = dump_and_compress(
            path,
            NarSource::NixStoreDump,
            Compression::Zstd(3),
            dir.path(),
            |_| {},
        )
        .unwrap();
        assert_eq!((ours.nar_hash, ours.nar_size), (nix.nar_hash, nix.nar_size));
    }
}
