//! Serde adapters for the kernel state a template stores on disk: KVM
//! registers, ABI structures, instants (stored as time remaining), and
//! files of the runtime image (stored by path, reopened at load through
//! the image being attached).

use std::cell::RefCell;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::mm::FileContents;
use crate::vfs::{HostFile, Image, TmpContents};

thread_local! {
    static IMAGE: RefCell<Option<Arc<Image>>> = const { RefCell::new(None) };
}

/// Run `f` (a deserialization) with `image` as the image files reopen from.
pub fn with_image<R>(image: Arc<Image>, f: impl FnOnce() -> R) -> R {
    IMAGE.with(|i| *i.borrow_mut() = Some(image));
    let r = f();
    IMAGE.with(|i| *i.borrow_mut() = None);
    r
}

/// The image being attached (an empty one outside `with_image`).
pub fn current_image() -> Arc<Image> {
    IMAGE
        .with(|i| i.borrow().clone())
        .unwrap_or_else(|| Arc::new(Image::placeholder()))
}

fn open_image_file<E: serde::de::Error>(path: &str) -> Result<Arc<HostFile>, E> {
    current_image()
        .open(path)
        .map_err(|e| E::custom(format!("image file {path}: {e}")))
}

/// A mapped file's contents as stored.
#[derive(Serialize, Deserialize)]
pub enum PersistedFile {
    /// A file of the image, by path.
    Image(String),
    /// Bytes held by the sandbox (a tmpfs file).
    Bytes(Arc<Vec<u8>>),
}

pub mod host_file {
    use super::*;

    pub fn serialize<S: Serializer>(f: &Arc<HostFile>, s: S) -> Result<S::Ok, S::Error> {
        f.path.serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Arc<HostFile>, D::Error> {
        let path = String::deserialize(d)?;
        open_image_file(&path)
    }
}

pub mod file_contents {
    use super::*;

    pub fn serialize<S: Serializer>(f: &Arc<dyn FileContents>, s: S) -> Result<S::Ok, S::Error> {
        f.persisted().serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Arc<dyn FileContents>, D::Error> {
        Ok(match PersistedFile::deserialize(d)? {
            PersistedFile::Image(path) => open_image_file::<D::Error>(&path)?,
            PersistedFile::Bytes(b) => Arc::new(TmpContents(b)),
        })
    }
}

pub mod regs {
    use super::*;
    use kvm_bindings::kvm_regs;

    pub fn serialize<S: Serializer>(r: &kvm_regs, s: S) -> Result<S::Ok, S::Error> {
        [
            r.rax, r.rbx, r.rcx, r.rdx, r.rsi, r.rdi, r.rsp, r.rbp, r.r8, r.r9, r.r10, r.r11,
            r.r12, r.r13, r.r14, r.r15, r.rip, r.rflags,
        ]
        .serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<kvm_regs, D::Error> {
        let a = <[u64; 18]>::deserialize(d)?;
        Ok(kvm_regs {
            rax: a[0],
            rbx: a[1],
            rcx: a[2],
            rdx: a[3],
            rsi: a[4],
            rdi: a[5],
            rsp: a[6],
            rbp: a[7],
            r8: a[8],
            r9: a[9],
            r10: a[10],
            r11: a[11],
            r12: a[12],
            r13: a[13],
            r14: a[14],
            r15: a[15],
            rip: a[16],
            rflags: a[17],
        })
    }
}

/// Plain ABI structures, as their bytes.
pub mod pod {
    use super::*;
    use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

    pub fn serialize<T: IntoBytes + Immutable, S: Serializer>(
        v: &T,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        v.as_bytes().serialize(s)
    }

    pub fn deserialize<'de, T: FromBytes + KnownLayout, D: Deserializer<'de>>(
        d: D,
    ) -> Result<T, D::Error> {
        let b = Vec::<u8>::deserialize(d)?;
        T::read_from_bytes(&b).map_err(|_| D::Error::custom("structure of the wrong size"))
    }
}

pub mod pod_vec {
    use super::*;
    use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

    pub fn serialize<T: IntoBytes + Immutable, S: Serializer>(
        v: &[T],
        s: S,
    ) -> Result<S::Ok, S::Error> {
        v.iter()
            .map(|x| x.as_bytes().to_vec())
            .collect::<Vec<_>>()
            .serialize(s)
    }

    pub fn deserialize<'de, T: FromBytes + KnownLayout, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Vec<T>, D::Error> {
        Vec::<Vec<u8>>::deserialize(d)?
            .iter()
            .map(|b| {
                T::read_from_bytes(b).map_err(|_| D::Error::custom("structure of the wrong size"))
            })
            .collect()
    }
}

/// An instant, as the time left until it (zero if past).
pub mod instant {
    use super::*;

    pub fn serialize<S: Serializer>(t: &Instant, s: S) -> Result<S::Ok, S::Error> {
        (t.saturating_duration_since(Instant::now()).as_nanos() as u64).serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Instant, D::Error> {
        Ok(Instant::now() + Duration::from_nanos(u64::deserialize(d)?))
    }
}

pub mod opt_instant {
    use super::*;

    pub fn serialize<S: Serializer>(t: &Option<Instant>, s: S) -> Result<S::Ok, S::Error> {
        t.map(|t| t.saturating_duration_since(Instant::now()).as_nanos() as u64)
            .serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Instant>, D::Error> {
        Ok(Option::<u64>::deserialize(d)?.map(|ns| Instant::now() + Duration::from_nanos(ns)))
    }
}

pub mod page_tables {
    use super::*;
    use zeroboot_vmm::PageTables;

    pub fn serialize<S: Serializer>(p: &PageTables, s: S) -> Result<S::Ok, S::Error> {
        p.root().serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<PageTables, D::Error> {
        Ok(PageTables::new(u64::deserialize(d)?))
    }
}
