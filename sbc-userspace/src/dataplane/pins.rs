//! Where pinned state lives: `<bpffs>/sbc/<instance>/v<MAP_ABI_VERSION>/`, holding one pin per
//! map and `links/<interface>` per attached XDP link.
use std::{
    io,
    path::{Path, PathBuf},
};

use anyhow::{Context as _, bail};
use sbc_common::maps::MAP_ABI_VERSION;

/// The bpffs magic number (`statfs.f_type`).
const BPF_FS_MAGIC: i64 = 0xcafe_4a11;

#[derive(Debug, Clone)]
pub struct PinLayout {
    /// `<bpffs>/sbc/<instance>`: everything of this instance, all versions.
    pub instance_dir: PathBuf,
    /// `<instance_dir>/v<N>`: the maps and links of this map layout.
    pub dir: PathBuf,
}

impl PinLayout {
    pub fn new(bpffs: &Path, instance: &str) -> Self {
        let instance_dir = bpffs.join("sbc").join(instance);
        let dir = instance_dir.join(format!("v{MAP_ABI_VERSION}"));
        Self { instance_dir, dir }
    }

    pub fn map(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    pub fn link(&self, interface: &str) -> PathBuf {
        self.dir.join("links").join(interface)
    }

    /// True when a previous daemon left pinned state for this instance.
    pub fn exists(&self) -> bool {
        self.instance_dir.exists()
    }

    /// Removes every pin of the instance. Unpinning a link that no process holds detaches its
    /// XDP program, and unpinned maps are freed once nothing uses them.
    pub fn remove(&self) -> anyhow::Result<()> {
        match std::fs::remove_dir_all(&self.instance_dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e).with_context(|| format!("removing {}", self.instance_dir.display())),
        }
    }

    pub fn create(&self) -> anyhow::Result<()> {
        let links = self.dir.join("links");
        std::fs::create_dir_all(&links).with_context(|| format!("creating {}", links.display()))
    }
}

fn is_bpffs(path: &Path) -> io::Result<bool> {
    let c_path = std::ffi::CString::new(path.as_os_str().as_encoded_bytes())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    // SAFETY: zeroed statfs is a valid out-parameter; `c_path` is NUL-terminated.
    let mut stat: libc::statfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statfs(c_path.as_ptr(), &mut stat) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(stat.f_type as i64 == BPF_FS_MAGIC)
}

/// Mounts bpffs at `path` unless it is mounted there already.
pub fn ensure_bpffs(path: &Path) -> anyhow::Result<()> {
    if path.exists() && is_bpffs(path)? {
        return Ok(());
    }
    std::fs::create_dir_all(path).with_context(|| format!("creating {}", path.display()))?;
    let target = std::ffi::CString::new(path.as_os_str().as_encoded_bytes())?;
    // SAFETY: all pointers are valid NUL-terminated strings or null where allowed.
    let rc = unsafe {
        libc::mount(
            c"bpf".as_ptr(),
            target.as_ptr(),
            c"bpf".as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        bail!(
            "cannot mount bpffs at {}: {} (the daemon needs root or CAP_SYS_ADMIN)",
            path.display(),
            io::Error::last_os_error()
        );
    }
    Ok(())
}

/// The interface a pinned XDP link is attached to; 0 once that interface is gone (the kernel
/// then keeps the link, defunct). aya does not expose a link's target, so this asks bpf(2).
pub fn pinned_xdp_link_ifindex(path: &Path) -> io::Result<u32> {
    const BPF_OBJ_GET: libc::c_long = 7;
    const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;
    const BPF_LINK_TYPE_XDP: u32 = 6;
    /// `struct bpf_link_info`: type, id, prog_id, then (8-aligned) the per-type union, which
    /// for XDP starts with the ifindex.
    const IFINDEX_OFFSET: usize = 16;

    let c_path = std::ffi::CString::new(path.as_os_str().as_encoded_bytes())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    // union bpf_attr for BPF_OBJ_GET: pathname, bpf_fd, file_flags (zero-padded).
    let mut get = [0u64; 4];
    get[0] = c_path.as_ptr() as u64;
    // SAFETY: `get` is a valid bpf_attr prefix for BPF_OBJ_GET and outlives the call.
    let fd = unsafe { libc::syscall(libc::SYS_bpf, BPF_OBJ_GET, get.as_ptr(), size_of_val(&get)) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel just gave us this descriptor; OwnedFd closes it.
    let fd = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd as i32) };
    let mut info = [0u8; 64];
    // union bpf_attr for BPF_OBJ_GET_INFO_BY_FD: bpf_fd (u32), info_len (u32), info (u64).
    let mut attr = [0u64; 2];
    attr[0] = u64::from(std::os::fd::AsRawFd::as_raw_fd(&fd) as u32) | ((info.len() as u64) << 32);
    attr[1] = info.as_mut_ptr() as u64;
    // SAFETY: `attr` is a valid bpf_attr for this command; `info` is writable for its length.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_OBJ_GET_INFO_BY_FD,
            attr.as_ptr(),
            size_of_val(&attr),
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    let word = |at: usize| u32::from_ne_bytes(info[at..at + 4].try_into().expect("4 bytes"));
    if word(0) != BPF_LINK_TYPE_XDP {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{} is not an XDP link", path.display()),
        ));
    }
    Ok(word(IFINDEX_OFFSET))
}
