//! Structures copied between the sandbox's kernel and user memory, laid out
//! exactly as on Linux x86-64 (sizes are checked by tests below). Build
//! them with `zerocopy::FromZeros::new_zeroed()` and fill the fields.

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

macro_rules! abi_struct {
    ($(#[$m:meta])* pub struct $name:ident { $($(#[$fm:meta])* pub $f:ident : $t:ty),* $(,)? }) => {
        $(#[$m])*
        #[repr(C)]
        #[derive(Debug, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
        pub struct $name { $($(#[$fm])* pub $f: $t),* }
    };
}

abi_struct! {
    /// `struct timespec`.
    pub struct Timespec { pub tv_sec: i64, pub tv_nsec: i64 }
}

abi_struct! {
    /// `struct timeval`.
    pub struct Timeval { pub tv_sec: i64, pub tv_usec: i64 }
}

abi_struct! {
    /// `struct timezone`.
    pub struct Timezone { pub tz_minuteswest: i32, pub tz_dsttime: i32 }
}

abi_struct! {
    /// `struct stat` (x86-64 layout, 144 bytes).
    pub struct Stat {
        pub st_dev: u64,
        pub st_ino: u64,
        pub st_nlink: u64,
        pub st_mode: u32,
        pub st_uid: u32,
        pub st_gid: u32,
        pub pad0: u32,
        pub st_rdev: u64,
        pub st_size: i64,
        pub st_blksize: i64,
        pub st_blocks: i64,
        pub st_atime: i64,
        pub st_atime_nsec: i64,
        pub st_mtime: i64,
        pub st_mtime_nsec: i64,
        pub st_ctime: i64,
        pub st_ctime_nsec: i64,
        pub unused: [i64; 3],
    }
}

abi_struct! {
    /// `struct statx_timestamp`.
    pub struct StatxTimestamp { pub tv_sec: i64, pub tv_nsec: u32, pub reserved: i32 }
}

abi_struct! {
    /// `struct statx` (256 bytes).
    pub struct Statx {
        pub stx_mask: u32,
        pub stx_blksize: u32,
        pub stx_attributes: u64,
        pub stx_nlink: u32,
        pub stx_uid: u32,
        pub stx_gid: u32,
        pub stx_mode: u16,
        pub spare0: u16,
        pub stx_ino: u64,
        pub stx_size: u64,
        pub stx_blocks: u64,
        pub stx_attributes_mask: u64,
        pub stx_atime: StatxTimestamp,
        pub stx_btime: StatxTimestamp,
        pub stx_ctime: StatxTimestamp,
        pub stx_mtime: StatxTimestamp,
        pub stx_rdev_major: u32,
        pub stx_rdev_minor: u32,
        pub stx_dev_major: u32,
        pub stx_dev_minor: u32,
        pub stx_mnt_id: u64,
        pub stx_dio_mem_align: u32,
        pub stx_dio_offset_align: u32,
        pub spare3: [u64; 12],
    }
}

abi_struct! {
    /// `struct new_utsname`: six NUL-padded 65-byte fields.
    pub struct Utsname {
        pub sysname: [u8; 65],
        pub nodename: [u8; 65],
        pub release: [u8; 65],
        pub version: [u8; 65],
        pub machine: [u8; 65],
        pub domainname: [u8; 65],
    }
}

abi_struct! {
    /// `struct iovec`.
    pub struct Iovec { pub base: u64, pub len: u64 }
}

abi_struct! {
    /// `struct sysinfo` (112 bytes).
    pub struct Sysinfo {
        pub uptime: i64,
        pub loads: [u64; 3],
        pub totalram: u64,
        pub freeram: u64,
        pub sharedram: u64,
        pub bufferram: u64,
        pub totalswap: u64,
        pub freeswap: u64,
        pub procs: u16,
        pub pad: u16,
        pub pad2: u32,
        pub totalhigh: u64,
        pub freehigh: u64,
        pub mem_unit: u32,
        pub pad3: u32,
    }
}

abi_struct! {
    /// `struct rlimit64`.
    pub struct Rlimit { pub rlim_cur: u64, pub rlim_max: u64 }
}

abi_struct! {
    /// The kernel's `struct sigaction` (rt_sigaction with an 8-byte mask).
    pub struct KernelSigaction {
        pub handler: u64,
        pub flags: u64,
        pub restorer: u64,
        pub mask: u64,
    }
}

abi_struct! {
    /// `stack_t` for sigaltstack.
    pub struct StackT { pub ss_sp: u64, pub ss_flags: i32, pub pad: i32, pub ss_size: u64 }
}

abi_struct! {
    /// `struct pollfd`.
    pub struct Pollfd { pub fd: i32, pub events: i16, pub revents: i16 }
}

abi_struct! {
    /// `struct tms`.
    pub struct Tms { pub tms_utime: i64, pub tms_stime: i64, pub tms_cutime: i64, pub tms_cstime: i64 }
}

abi_struct! {
    /// `struct rusage` (144 bytes).
    pub struct Rusage {
        pub ru_utime: Timeval,
        pub ru_stime: Timeval,
        pub rest: [i64; 14],
    }
}

abi_struct! {
    /// `struct winsize`.
    pub struct Winsize { pub ws_row: u16, pub ws_col: u16, pub ws_xpixel: u16, pub ws_ypixel: u16 }
}

abi_struct! {
    /// `struct statfs` (x86-64, 120 bytes).
    pub struct Statfs {
        pub f_type: i64,
        pub f_bsize: i64,
        pub f_blocks: u64,
        pub f_bfree: u64,
        pub f_bavail: u64,
        pub f_files: u64,
        pub f_ffree: u64,
        pub f_fsid: [i32; 2],
        pub f_namelen: i64,
        pub f_frsize: i64,
        pub f_flags: i64,
        pub f_spare: [i64; 4],
    }
}

/// Write `s` into a fixed NUL-padded field, truncating to leave a NUL.
pub fn fill_cstr(field: &mut [u8], s: &str) {
    field.fill(0);
    let n = s.len().min(field.len().saturating_sub(1));
    field[..n].copy_from_slice(&s.as_bytes()[..n]);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::mem::size_of;

    #[test]
    fn sizes_match_linux_x86_64() {
        assert_eq!(size_of::<Stat>(), 144);
        assert_eq!(size_of::<Statx>(), 256);
        assert_eq!(size_of::<Utsname>(), 390);
        assert_eq!(size_of::<Sysinfo>(), 112);
        assert_eq!(size_of::<KernelSigaction>(), 32);
        assert_eq!(size_of::<StackT>(), 24);
        assert_eq!(size_of::<Rusage>(), 144);
        assert_eq!(size_of::<Statfs>(), 120);
    }
}
