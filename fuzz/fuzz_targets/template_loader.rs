//! Template loading (`Snapshot::load`, crates/kernel/src/snapshot.rs) on
//! an arbitrary state.bin. The first input byte picks how much of the
//! file is the fuzzer's:
//!
//! * 0: all of it;
//! * 1: the payload, behind a valid header (magic, version, length,
//!   CRC-64), so the checksum never stops it;
//! * 2: the payload after this build's kernel fingerprint, so the whole
//!   state is deserialized (seed it with a real template's payload minus
//!   its fingerprint: see docs/fuzzing.md).
//!
//! Any error is fine; a panic or an abort (a huge allocation) is a bug.
//! `ZEROBOOT_FUZZ_IMAGE` names an image directory to attach (the one the
//! seed template was made from), so that mapped image files resolve, and
//! `ZEROBOOT_FUZZ_IMAGE_ID` its id (the name of its directory in the
//! cache), so that the checks after deserialization run too;
//! `ZEROBOOT_FUZZ_VERBOSE` prints how far each input got.
#![no_main]

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use libfuzzer_sys::fuzz_target;
use zeroboot_kernel::snapshot::{FORMAT_VERSION, KERNEL_FINGERPRINT};
use zeroboot_kernel::vfs::Image;
use zeroboot_kernel::Snapshot;

const MAGIC: &[u8; 8] = b"ZBTMPL\0\0";
const CRC: crc::Crc<u64> = crc::Crc::<u64>::new(&crc::CRC_64_ECMA_182);

struct World {
    _dir: tempfile::TempDir,
    dir: PathBuf,
    image: Arc<Image>,
    image_id: String,
    fingerprint: Vec<u8>,
}

fn world() -> &'static World {
    static W: OnceLock<World> = OnceLock::new();
    W.get_or_init(|| {
        let tmp = tempfile::tempdir().expect("a temporary directory");
        let dir = tmp.path().join("template");
        std::fs::create_dir_all(&dir).expect("the template directory");
        std::fs::write(dir.join("memory.bin"), b"").expect("memory.bin");
        let image = match std::env::var_os("ZEROBOOT_FUZZ_IMAGE") {
            Some(p) => Image::new(PathBuf::from(p)).expect("ZEROBOOT_FUZZ_IMAGE"),
            None => Image::empty().expect("an empty image"),
        };
        World {
            _dir: tmp,
            dir,
            image: Arc::new(image),
            image_id: std::env::var("ZEROBOOT_FUZZ_IMAGE_ID")
                .unwrap_or_else(|_| "fuzz-image".into()),
            fingerprint: bincode::serialize(KERNEL_FINGERPRINT).expect("bincode"),
        }
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let w = world();
    let file = match mode % 3 {
        0 => rest.to_vec(),
        m => {
            let mut payload = Vec::with_capacity(rest.len() + 64);
            if m == 2 {
                payload.extend_from_slice(&w.fingerprint);
            }
            payload.extend_from_slice(rest);
            let mut f = Vec::with_capacity(payload.len() + 32);
            f.extend_from_slice(MAGIC);
            f.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
            f.extend_from_slice(&0u32.to_le_bytes());
            f.extend_from_slice(&(payload.len() as u64).to_le_bytes());
            f.extend_from_slice(&CRC.checksum(&payload).to_le_bytes());
            f.extend_from_slice(&payload);
            f
        }
    };
    std::fs::write(w.dir.join("state.bin"), &file).expect("state.bin");
    let r = Snapshot::load(&w.dir, w.image.clone(), &w.image_id);
    if std::env::var_os("ZEROBOOT_FUZZ_VERBOSE").is_some() {
        // How far an input gets (to check seeds): the error, or "loaded".
        match r {
            Ok(_) => eprintln!("template_loader: loaded"),
            Err(e) => eprintln!("template_loader: {e}"),
        }
    }
});
