//! The durable watermark: the highest seq known to be durable (and hence
//! possibly acknowledged), kept in the small file `<dir>/watermark`. It owns
//! one invariant: the stored value never exceeds what was durable when it
//! was written (the writer stores it only after the batch's flush returned),
//! so recovery may trust it as a floor it must not cut below. The file has
//! two 32-byte checksummed slots written alternately (by generation), so a
//! torn write of one slot leaves the other, older value readable.

use crate::error::{io_ctx, JournalError};
use crate::sys;
use std::fs::{self, File, OpenOptions};
use std::mem::{offset_of, size_of};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

pub(crate) const WATERMARK_FILE: &str = "watermark";
const WATERMARK_MAGIC: [u8; 4] = *b"MXJW";
const WATERMARK_VERSION: u16 = 1;
const SLOT_LEN: usize = 32;

/// One slot as laid out on disk (little-endian fields).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct WatermarkSlot {
    magic: [u8; 4],
    version: u16,
    reserved: u16,
    generation: u64,
    seq: u64,
    reserved2: u32,
    crc32c: u32,
}

const _: () = assert!(size_of::<WatermarkSlot>() == SLOT_LEN);
const _: () = assert!(offset_of!(WatermarkSlot, generation) == 8);
const _: () = assert!(offset_of!(WatermarkSlot, seq) == 16);
const _: () = assert!(offset_of!(WatermarkSlot, crc32c) == 28);

impl WatermarkSlot {
    fn to_bytes(self) -> [u8; SLOT_LEN] {
        let mut b = [0u8; SLOT_LEN];
        b[0..4].copy_from_slice(&self.magic);
        b[4..6].copy_from_slice(&self.version.to_le_bytes());
        b[6..8].copy_from_slice(&self.reserved.to_le_bytes());
        b[8..16].copy_from_slice(&self.generation.to_le_bytes());
        b[16..24].copy_from_slice(&self.seq.to_le_bytes());
        b[24..28].copy_from_slice(&self.reserved2.to_le_bytes());
        b[28..32].copy_from_slice(&self.crc32c.to_le_bytes());
        b
    }

    fn encode(generation: u64, seq: u64) -> [u8; SLOT_LEN] {
        let mut s = WatermarkSlot {
            magic: WATERMARK_MAGIC,
            version: WATERMARK_VERSION,
            reserved: 0,
            generation,
            seq,
            reserved2: 0,
            crc32c: 0,
        };
        s.crc32c = crc32c::crc32c(&s.to_bytes()[..28]);
        s.to_bytes()
    }

    /// `Ok(None)` for a never-written (all-zero) slot.
    fn decode(b: &[u8]) -> Result<Option<(u64, u64)>, String> {
        let Some(b) = b.first_chunk::<SLOT_LEN>() else {
            return Ok(None);
        };
        if b.iter().all(|&x| x == 0) {
            return Ok(None);
        }
        if b[0..4] != WATERMARK_MAGIC {
            return Err(format!("bad magic {:02x?}", &b[0..4]));
        }
        if u16::from_le_bytes([b[4], b[5]]) != WATERMARK_VERSION {
            return Err("unsupported version".into());
        }
        let stored = u32::from_le_bytes([b[28], b[29], b[30], b[31]]);
        let computed = crc32c::crc32c(&b[..28]);
        if stored != computed {
            return Err(format!(
                "checksum mismatch (stored {stored:#010x}, computed {computed:#010x})"
            ));
        }
        let mut g = [0u8; 8];
        g.copy_from_slice(&b[8..16]);
        let mut s = [0u8; 8];
        s.copy_from_slice(&b[16..24]);
        Ok(Some((u64::from_le_bytes(g), u64::from_le_bytes(s))))
    }
}

/// The watermark of one journal directory.
#[derive(Debug)]
pub(crate) struct Watermark {
    path: PathBuf,
    dir: PathBuf,
    file: Option<File>,
    generation: u64,
    seq: u64,
}

impl Watermark {
    /// Loads the newest valid slot. A missing file is watermark 0. When no
    /// slot is valid the load fails unless `repair`, which resets it to 0
    /// and returns a description of what was discarded.
    pub(crate) fn load(
        dir: &Path,
        repair: bool,
    ) -> Result<(Watermark, Option<String>), JournalError> {
        let path = dir.join(WATERMARK_FILE);
        let mut wm = Watermark {
            path: path.clone(),
            dir: dir.to_path_buf(),
            file: None,
            generation: 0,
            seq: 0,
        };
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((wm, None)),
            Err(e) => return Err(JournalError::io(format!("reading {}", path.display()), e)),
        };
        let slots = [
            WatermarkSlot::decode(bytes.get(..SLOT_LEN).unwrap_or(&bytes)),
            WatermarkSlot::decode(bytes.get(SLOT_LEN..).unwrap_or(&[])),
        ];
        let best = slots.iter().filter_map(|s| s.clone().ok().flatten()).max();
        if let Some((generation, seq)) = best {
            wm.generation = generation;
            wm.seq = seq;
            return Ok((wm, None));
        }
        let errors: Vec<String> = slots.iter().filter_map(|s| s.clone().err()).collect();
        if errors.is_empty() {
            return Ok((wm, None));
        }
        let detail = format!("no valid slot: {}", errors.join("; "));
        if repair {
            return Ok((
                wm,
                Some(format!("discarded unreadable watermark file ({detail})")),
            ));
        }
        Err(JournalError::BadWatermark { file: path, detail })
    }

    pub(crate) fn seq(&self) -> u64 {
        self.seq
    }

    /// Stores `seq` in the older slot; with `sync` the write is fdatasync'ed
    /// (and the directory fsync'ed when the file is created). The caller
    /// guarantees `seq` is already durable under its policy.
    pub(crate) fn store(&mut self, seq: u64, sync: bool) -> Result<(), JournalError> {
        if self.file.is_none() {
            let created = !self.path.exists();
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(&self.path)
                .map_err(io_ctx(|| format!("opening {}", self.path.display())))?;
            if created && sync {
                sys::fsync_dir(&self.dir)?;
            }
            self.file = Some(file);
        }
        let generation = self.generation + 1;
        let slot = WatermarkSlot::encode(generation, seq);
        let offset = (generation % 2) * SLOT_LEN as u64;
        if let Some(file) = &self.file {
            file.write_all_at(&slot, offset)
                .map_err(io_ctx(|| format!("writing {}", self.path.display())))?;
            if sync {
                file.sync_data()
                    .map_err(io_ctx(|| format!("fdatasync of {}", self.path.display())))?;
            }
        }
        self.generation = generation;
        self.seq = seq;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_load_and_torn_slot() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut wm, note) = Watermark::load(dir.path(), false).expect("load");
        assert_eq!((wm.seq(), note), (0, None));
        wm.store(10, true).expect("store");
        wm.store(20, true).expect("store");
        let (wm2, _) = Watermark::load(dir.path(), false).expect("load");
        assert_eq!(wm2.seq(), 20);
        // Tear the newest slot (generation 2 lives in slot 0): the older one wins.
        let path = dir.path().join(WATERMARK_FILE);
        let mut bytes = fs::read(&path).expect("read");
        bytes[17] ^= 0xff;
        fs::write(&path, &bytes).expect("write");
        let (wm3, _) = Watermark::load(dir.path(), false).expect("load");
        assert_eq!(wm3.seq(), 10);
        // Both slots bad: refused, unless repair.
        bytes[SLOT_LEN + 17] ^= 0xff;
        fs::write(&path, &bytes).expect("write");
        let err = Watermark::load(dir.path(), false).expect_err("must refuse");
        assert!(err.to_string().contains("repair"), "{err}");
        let (wm4, note) = Watermark::load(dir.path(), true).expect("repair");
        assert_eq!(wm4.seq(), 0);
        assert!(note.is_some());
    }
}
