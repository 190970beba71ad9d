//! Random secrets for the bed (Garage keys, RPC secret), from the kernel.

use std::io::Read;

use anyhow::{Context, Result};

/// `bytes` random bytes from /dev/urandom as lowercase hex.
pub fn random_hex(bytes: usize) -> Result<String> {
    let mut buf = vec![0u8; bytes];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut file| file.read_exact(&mut buf))
        .context("reading /dev/urandom")?;
    Ok(buf.iter().map(|b| format!("{b:02x}")).collect())
}
