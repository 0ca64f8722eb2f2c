//! The frame of every state file zeroboot writes (templates and sandbox
//! snapshots, `docs/snapshot-format.md`): a 32-byte header (magic, format
//! version, VMM layout version, payload length, CRC-64 of the payload),
//! then the payload. Reading checks all of it before anything is decoded.

use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use zeroboot_vmm::layout::LAYOUT_VERSION;

const HEADER: usize = 32;
const CRC: crc::Crc<u64> = crc::Crc::<u64>::new(&crc::CRC_64_ECMA_182);

/// Why a state file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error("wrong magic")]
    NotOurs,
    #[error("format version {0}")]
    Version(u32),
    #[error("VMM layout {0}")]
    Layout(u32),
    #[error("{0}")]
    Corrupt(&'static str),
}

/// The checksum the header carries (also a payload's identity).
pub fn checksum(payload: &[u8]) -> u64 {
    CRC.checksum(payload)
}

/// Write `payload` framed into a new file at `path`, synced.
pub fn write(path: &Path, magic: &[u8; 8], version: u32, payload: &[u8]) -> std::io::Result<()> {
    let mut header = Vec::with_capacity(HEADER);
    header.extend_from_slice(magic);
    header.extend_from_slice(&version.to_le_bytes());
    header.extend_from_slice(&LAYOUT_VERSION.to_le_bytes());
    header.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    header.extend_from_slice(&checksum(payload).to_le_bytes());
    let mut f = File::create(path)?;
    f.write_all(&header)?;
    f.write_all(payload)?;
    f.sync_all()
}

/// The payload of the file at `path` if its frame is whole and of this
/// build (`magic`, `version`, this VMM layout); with its checksum.
pub fn read(path: &Path, magic: &[u8; 8], version: u32) -> Result<(Vec<u8>, u64), FrameError> {
    let mut f = File::open(path)?;
    let mut header = [0u8; HEADER];
    f.read_exact(&mut header).map_err(|_| FrameError::NotOurs)?;
    if &header[..8] != magic {
        return Err(FrameError::NotOurs);
    }
    let word = |r: std::ops::Range<usize>| {
        header[r]
            .iter()
            .rev()
            .fold(0u64, |a, &b| (a << 8) | b as u64)
    };
    let found = word(8..12) as u32;
    if found != version {
        return Err(FrameError::Version(found));
    }
    let layout = word(12..16) as u32;
    if layout != LAYOUT_VERSION {
        return Err(FrameError::Layout(layout));
    }
    let (len, crc) = (word(16..24), word(24..32));
    if f.metadata()?.len() != HEADER as u64 + len {
        return Err(FrameError::Corrupt("truncated or padded"));
    }
    let mut payload = vec![0u8; len as usize];
    f.read_exact(&mut payload)?;
    if checksum(&payload) != crc {
        return Err(FrameError::Corrupt("checksum mismatch"));
    }
    Ok((payload, crc))
}

/// A new, empty temporary directory beside `dir` (its parent created),
/// where a directory is written before it is renamed into place.
pub fn temp_dir_beside(dir: &Path) -> std::io::Result<PathBuf> {
    let parent = dir.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent)?;
    let tmp = parent.join(format!(
        ".{}.tmp{}",
        dir.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp)?;
    Ok(tmp)
}
