//! Copying to and from user memory. A user pointer is untrusted: every
//! access walks the page tables, checks user and write permission, and
//! fails with EFAULT instead of touching anything else.

use zeroboot_abi::Errno;
use zeroboot_vmm::layout::{PAGE_SIZE, USER_END};
use zeroboot_vmm::paging::pte;
use zeroboot_vmm::GuestMemory;
use zerocopy::{FromBytes, Immutable, IntoBytes};

use super::{AddressSpace, Fault};

impl AddressSpace {
    /// The guest-physical address of user byte `va`, populating a page
    /// that is mapped but not yet present.
    pub(crate) fn user_gpa(
        &mut self,
        mem: &GuestMemory,
        va: u64,
        write: bool,
    ) -> Result<u64, Errno> {
        if va >= USER_END {
            return Err(Errno::EFAULT);
        }
        for _ in 0..2 {
            if let Some(e) = self.pt.translate(mem, va) {
                let ok = e & pte::USER != 0 && (!write || e & pte::WRITABLE != 0);
                if !ok {
                    return Err(Errno::EFAULT);
                }
                return Ok((e & pte::ADDR_MASK) + (va & (PAGE_SIZE - 1)));
            }
            let code = if write { 2 } else { 0 } | 4;
            match self.fault(mem, va, code) {
                Fault::Resolved => continue,
                Fault::OutOfMemory => return Err(Errno::ENOMEM),
                Fault::Segv(_) => return Err(Errno::EFAULT),
            }
        }
        Err(Errno::EFAULT)
    }

    /// Write `data` at user address `va` of this layout, walking its page
    /// tables in `tables` instead of `mem`: a new fork's memory and its
    /// template's, where the tables are the same. Every page of the fork's
    /// own mapping that the VMM reads is mapped into it and counted in its
    /// host memory (the walks of a fork's set-up were 37 pages, 148 KiB
    /// per fork); the template's are read once for all. `None` where a
    /// page is not mapped there as needed (user, and writable unless
    /// `forced`): the caller writes the usual way.
    pub fn write_via(
        &self,
        tables: &GuestMemory,
        mem: &GuestMemory,
        va: u64,
        data: &[u8],
        forced: bool,
    ) -> Option<Result<(), Errno>> {
        let mut gpas = Vec::new();
        let mut done = 0usize;
        while done < data.len() {
            let cur = va.checked_add(done as u64)?;
            if cur >= USER_END {
                return None;
            }
            let e = self.pt.translate(tables, cur)?;
            if e & pte::USER == 0 || (!forced && e & pte::WRITABLE == 0) {
                return None;
            }
            let n = ((PAGE_SIZE - (cur & (PAGE_SIZE - 1))) as usize).min(data.len() - done);
            gpas.push(((e & pte::ADDR_MASK) + (cur & (PAGE_SIZE - 1)), done, n));
            done += n;
        }
        Some(
            gpas.into_iter()
                .try_for_each(|(gpa, at, n)| mem.write(gpa, &data[at..at + n]))
                .map_err(|_| Errno::EFAULT),
        )
    }

    /// Copy user memory at `va` into `buf`.
    pub fn read(&mut self, mem: &GuestMemory, va: u64, buf: &mut [u8]) -> Result<(), Errno> {
        let mut done = 0usize;
        while done < buf.len() {
            let cur = va.checked_add(done as u64).ok_or(Errno::EFAULT)?;
            let in_page = (PAGE_SIZE - (cur & (PAGE_SIZE - 1))) as usize;
            let n = in_page.min(buf.len() - done);
            let gpa = self.user_gpa(mem, cur, false)?;
            mem.read(gpa, &mut buf[done..done + n])
                .map_err(|_| Errno::EFAULT)?;
            done += n;
        }
        Ok(())
    }

    /// Copy `data` into user memory at `va`.
    pub fn write(&mut self, mem: &GuestMemory, va: u64, data: &[u8]) -> Result<(), Errno> {
        let mut done = 0usize;
        while done < data.len() {
            let cur = va.checked_add(done as u64).ok_or(Errno::EFAULT)?;
            let in_page = (PAGE_SIZE - (cur & (PAGE_SIZE - 1))) as usize;
            let n = in_page.min(data.len() - done);
            let gpa = self.user_gpa(mem, cur, true)?;
            mem.write(gpa, &data[done..done + n])
                .map_err(|_| Errno::EFAULT)?;
            done += n;
        }
        Ok(())
    }

    /// Zero user memory regardless of its protection (the loader clears
    /// the .bss tail of read-only-mapped file pages).
    pub fn zero_user(&mut self, mem: &GuestMemory, va: u64, len: u64) -> Result<(), Errno> {
        let mut done = 0u64;
        while done < len {
            let cur = va + done;
            let n = (PAGE_SIZE - (cur & (PAGE_SIZE - 1))).min(len - done);
            // Populate through a read access, then write the frame directly.
            self.user_gpa(mem, cur, false)?;
            let e = self.pt.translate(mem, cur).ok_or(Errno::EFAULT)?;
            let gpa = (e & pte::ADDR_MASK) + (cur & (PAGE_SIZE - 1));
            mem.zero(gpa, n as usize).map_err(|_| Errno::EFAULT)?;
            done += n;
        }
        Ok(())
    }

    /// Write `data` at `va` regardless of its protection: the VMM's own
    /// read-only pages (the vDSO's clock data).
    pub fn write_forced(&mut self, mem: &GuestMemory, va: u64, data: &[u8]) -> Result<(), Errno> {
        let mut done = 0usize;
        while done < data.len() {
            let cur = va.checked_add(done as u64).ok_or(Errno::EFAULT)?;
            let in_page = (PAGE_SIZE - (cur & (PAGE_SIZE - 1))) as usize;
            let n = in_page.min(data.len() - done);
            self.user_gpa(mem, cur, false)?;
            let e = self.pt.translate(mem, cur).ok_or(Errno::EFAULT)?;
            let gpa = (e & pte::ADDR_MASK) + (cur & (PAGE_SIZE - 1));
            mem.write(gpa, &data[done..done + n])
                .map_err(|_| Errno::EFAULT)?;
            done += n;
        }
        Ok(())
    }

    /// Read `len` bytes of user memory.
    pub fn read_vec(&mut self, mem: &GuestMemory, va: u64, len: usize) -> Result<Vec<u8>, Errno> {
        let mut v = vec![0u8; len];
        self.read(mem, va, &mut v)?;
        Ok(v)
    }

    /// Read a plain structure from user memory.
    pub fn read_obj<T: FromBytes + IntoBytes>(
        &mut self,
        mem: &GuestMemory,
        va: u64,
    ) -> Result<T, Errno> {
        let mut v = T::new_zeroed();
        self.read(mem, va, v.as_mut_bytes())?;
        Ok(v)
    }

    /// Write a plain structure to user memory.
    pub fn write_obj<T: IntoBytes + Immutable>(
        &mut self,
        mem: &GuestMemory,
        va: u64,
        v: &T,
    ) -> Result<(), Errno> {
        self.write(mem, va, v.as_bytes())
    }

    /// Read a NUL-terminated string of at most `max` bytes (without the NUL).
    pub fn read_cstr(&mut self, mem: &GuestMemory, va: u64, max: usize) -> Result<Vec<u8>, Errno> {
        let mut out = Vec::new();
        let mut cur = va;
        loop {
            let in_page = (PAGE_SIZE - (cur & (PAGE_SIZE - 1))) as usize;
            let gpa = self.user_gpa(mem, cur, false)?;
            let mut chunk = vec![0u8; in_page];
            mem.read(gpa, &mut chunk).map_err(|_| Errno::EFAULT)?;
            if let Some(nul) = chunk.iter().position(|&b| b == 0) {
                out.extend_from_slice(&chunk[..nul]);
                if out.len() > max {
                    return Err(Errno::ENAMETOOLONG);
                }
                return Ok(out);
            }
            out.extend_from_slice(&chunk);
            if out.len() > max {
                return Err(Errno::ENAMETOOLONG);
            }
            cur = cur.checked_add(in_page as u64).ok_or(Errno::EFAULT)?;
        }
    }

    /// Read a NULL-terminated array of string pointers (argv/envp style).
    pub fn read_cstr_array(
        &mut self,
        mem: &GuestMemory,
        va: u64,
        max_items: usize,
        max_len: usize,
    ) -> Result<Vec<Vec<u8>>, Errno> {
        let mut out = Vec::new();
        if va == 0 {
            return Ok(out);
        }
        for i in 0.. {
            if i >= max_items {
                return Err(Errno::E2BIG);
            }
            let p: u64 = self.read_obj(mem, va + 8 * i as u64)?;
            if p == 0 {
                break;
            }
            out.push(self.read_cstr(mem, p, max_len)?);
        }
        Ok(out)
    }
}
