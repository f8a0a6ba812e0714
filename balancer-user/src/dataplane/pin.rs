//! Pinned state under `[control].pin_dir`: every map of the program
//! (`maps/NAME`) and the XDP link of every interface (`links/IFNAME`), so that
//! the program keeps forwarding while no daemon runs, and the next daemon
//! takes over the same flows, counts and attachments.

use std::{
    ffi::CString,
    fs,
    os::unix::ffi::OsStrExt,
    path::{Path, PathBuf},
};

use anyhow::{Context, Result, bail};
use aya::maps::MapInfo;
use balancer_common::maps::{Flows, HalfOpen, MapDef, half_open_capacity};
use tracing::info;

/// `statfs` type of a BPF file system.
const BPF_FS_MAGIC: i64 = 0xcafe_4a11;
/// Where systemd and most distributions mount the BPF file system.
const BPF_FS_DEFAULT: &str = "/sys/fs/bpf";
const BPF_MAP_TYPE_DEVMAP_HASH: u32 = 25;

#[derive(Debug, Clone)]
pub struct Pins {
    dir: PathBuf,
}

/// The shape of a map as the program object defines it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MapShape {
    pub name: String,
    pub map_type: u32,
    pub key_size: u32,
    pub value_size: u32,
    pub max_entries: u32,
}

impl Pins {
    /// Makes `dir` usable: on a BPF file system (mounting one at the usual
    /// place if nothing is there), with its `maps` and `links` directories.
    /// `fresh` first discards what a previous daemon left.
    pub fn prepare(dir: &Path, fresh: bool) -> Result<Self> {
        let fs_root = nearest_existing(dir);
        if !is_bpffs(&fs_root) {
            if fs_root == Path::new(BPF_FS_DEFAULT) || dir.starts_with(BPF_FS_DEFAULT) {
                mount_bpffs(Path::new(BPF_FS_DEFAULT))?;
            } else {
                bail!(
                    "control.pin_dir {} is not on a BPF file system: mount one (mount -t bpf bpf DIR) or choose a directory under {BPF_FS_DEFAULT}",
                    dir.display()
                );
            }
        }
        let pins = Self {
            dir: dir.to_path_buf(),
        };
        if fresh && dir.exists() {
            pins.remove_all()
                .with_context(|| format!("discarding the pinned state in {}", dir.display()))?;
            info!(pin_dir = %dir.display(), "discarded the pinned state of a previous daemon");
        }
        for sub in ["maps", "links"] {
            fs::create_dir_all(dir.join(sub))
                .with_context(|| format!("creating {}", dir.join(sub).display()))?;
        }
        Ok(pins)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn map_path(&self, name: &str) -> PathBuf {
        map_path(&self.dir, name)
    }

    pub fn link_path(&self, interface: &str) -> PathBuf {
        self.dir.join("links").join(interface)
    }

    /// Interfaces with a pinned link.
    pub fn linked_interfaces(&self) -> Vec<String> {
        let Ok(entries) = fs::read_dir(self.dir.join("links")) else {
            return Vec::new();
        };
        entries
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .collect()
    }

    /// Whether a previous daemon left maps here, after checking that every
    /// one has the shape this program expects. A mismatch is refused: reading
    /// a map of another layout would forward traffic wrongly.
    pub fn existing_state(&self, shapes: &[MapShape]) -> Result<bool> {
        let mut found = 0;
        for shape in shapes {
            let path = self.map_path(&shape.name);
            if !path.exists() {
                continue;
            }
            found += 1;
            let info = MapInfo::from_pin(&path)
                .with_context(|| format!("reading pinned map {}", path.display()))?;
            let pinned_type = info.map_type().map(|t| t as u32).unwrap_or(u32::MAX);
            let value_matters = shape.map_type != BPF_MAP_TYPE_DEVMAP_HASH;
            let mismatch = if pinned_type != shape.map_type {
                Some(format!(
                    "type {pinned_type}, this version {}",
                    shape.map_type
                ))
            } else if info.key_size() != shape.key_size
                || value_matters && info.value_size() != shape.value_size
            {
                Some(format!(
                    "key/value {}/{} bytes, this version {}/{}",
                    info.key_size(),
                    info.value_size(),
                    shape.key_size,
                    shape.value_size
                ))
            } else if info.max_entries() != shape.max_entries {
                Some(format!(
                    "{} entries, this configuration {}{}",
                    info.max_entries(),
                    shape.max_entries,
                    if shape.name == Flows::NAME || shape.name == HalfOpen::NAME {
                        " (flows.capacity changed)"
                    } else {
                        ""
                    }
                ))
            } else {
                None
            };
            if let Some(why) = mismatch {
                bail!(incompatible(
                    &self.dir,
                    &format!("map {}: {why}", shape.name)
                ));
            }
        }
        Ok(found > 0)
    }

    /// Unpins links (the program leaves those interfaces once no daemon holds
    /// it) and maps, and removes the directory.
    pub fn remove_all(&self) -> Result<()> {
        for sub in ["links", "maps"] {
            let dir = self.dir.join(sub);
            if let Ok(entries) = fs::read_dir(&dir) {
                for e in entries.flatten() {
                    fs::remove_file(e.path())
                        .with_context(|| format!("unpinning {}", e.path().display()))?;
                }
                let _ = fs::remove_dir(&dir);
            }
        }
        let _ = fs::remove_dir(&self.dir);
        Ok(())
    }
}

pub(super) fn map_path(pin_dir: &Path, name: &str) -> PathBuf {
    pin_dir.join("maps").join(name)
}

pub fn incompatible(dir: &Path, why: &str) -> String {
    format!(
        "pinned state in {} is from an incompatible version or configuration ({why}); \
         run `balancer run --fresh` to discard it (established connections through this host are dropped)",
        dir.display()
    )
}

/// The program object's maps, except the loader's own data sections.
pub fn shapes(program: &[u8], flow_capacity: u32) -> Result<Vec<MapShape>> {
    let obj = aya_obj::Object::parse(program).context("parsing the program object")?;
    let mut shapes: Vec<MapShape> = obj
        .maps
        .iter()
        .filter(|(name, _)| !name.starts_with('.'))
        .map(|(name, map)| MapShape {
            name: name.clone(),
            map_type: map.map_type(),
            key_size: map.key_size(),
            value_size: map.value_size(),
            max_entries: if name == Flows::NAME {
                flow_capacity
            } else if name == HalfOpen::NAME {
                half_open_capacity(flow_capacity)
            } else {
                map.max_entries()
            },
        })
        .collect();
    shapes.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(shapes)
}

fn nearest_existing(dir: &Path) -> PathBuf {
    let mut p = dir;
    loop {
        if p.exists() {
            return p.to_path_buf();
        }
        match p.parent() {
            Some(parent) => p = parent,
            None => return PathBuf::from("/"),
        }
    }
}

fn is_bpffs(path: &Path) -> bool {
    let Ok(c) = CString::new(path.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: statfs fills `buf`; `c` is a valid C string.
    let mut buf: libc::statfs = unsafe { std::mem::zeroed() };
    unsafe { libc::statfs(c.as_ptr(), &mut buf) == 0 && buf.f_type as i64 == BPF_FS_MAGIC }
}

fn mount_bpffs(at: &Path) -> Result<()> {
    fs::create_dir_all(at).with_context(|| format!("creating {}", at.display()))?;
    let target = CString::new(at.as_os_str().as_bytes())?;
    let (src, fstype, opts) = (c"bpf", c"bpf", c"mode=0700");
    // SAFETY: all pointers are valid C strings for the duration of the call.
    let rc = unsafe {
        libc::mount(
            src.as_ptr(),
            target.as_ptr(),
            fstype.as_ptr(),
            0,
            opts.as_ptr().cast(),
        )
    };
    if rc != 0 {
        bail!(
            "mounting a BPF file system at {}: {}",
            at.display(),
            std::io::Error::last_os_error()
        );
    }
    info!(at = %at.display(), "mounted a BPF file system");
    Ok(())
}
