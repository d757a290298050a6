//! The cached guest kernels (image, modules, headers) that `provision.sh` extracted: the pinned
//! stable Debian kernel and the newest one Debian builds ([`KernelLine`]).

use crate::error::{Error, IoContext, Result};
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, OnceLock};

/// Which of the two cached kernels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KernelLine {
    /// The pinned Debian stable kernel (6.1): every test's default, the one the fault-injection
    /// modules are built for.
    Stable,
    /// The newest kernel Debian builds (from unstable, 7.2 when pinned): block-layer PR reads
    /// (`IOC_PR_READ_*`), nvmet reservations. No headers: the fault-injection modules cannot be
    /// built for it on Debian 12 (its kbuild needs gcc 16 and glibc 2.38).
    Newest,
}

impl KernelLine {
    /// Both, stable first.
    pub const ALL: [KernelLine; 2] = [KernelLine::Stable, KernelLine::Newest];

    /// The name `FENCED_KERNEL` takes: `stable` or `newest`.
    pub fn name(self) -> &'static str {
        match self {
            KernelLine::Stable => "stable",
            KernelLine::Newest => "newest",
        }
    }

    /// The kernel a whole run is forced onto with `FENCED_KERNEL=stable|newest` (every lab's
    /// default kernel, whatever its test chose; a guest pinned with [`crate::GuestSpec::kernel`]
    /// keeps its own). Panics on another value: a run asked for a kernel that does not exist.
    pub fn forced() -> Option<KernelLine> {
        let v = std::env::var("FENCED_KERNEL").ok()?;
        match v.as_str() {
            "" => None,
            "stable" => Some(KernelLine::Stable),
            "newest" => Some(KernelLine::Newest),
            other => panic!("FENCED_KERNEL={other}: use `stable` or `newest`"),
        }
    }

    /// The directory under the cache that `provision.sh` writes this kernel's `env` into.
    fn cache_dir(self) -> &'static str {
        match self {
            KernelLine::Stable => "kernel",
            KernelLine::Newest => "kernel-newest",
        }
    }
}

/// A Debian kernel extracted under the cache directory.
#[derive(Debug, Clone)]
pub struct Kernel {
    /// Which of the cached kernels this is.
    pub line: KernelLine,
    /// `uname -r` of the guest, e.g. `6.1.0-56-amd64`.
    pub version: String,
    /// The bzImage.
    pub image: PathBuf,
    /// `lib/modules/<version>` with a `modules.dep`.
    pub modules: PathBuf,
    /// The headers tree to build out-of-tree modules against (none for [`KernelLine::Newest`]).
    pub headers: Option<PathBuf>,
}

impl Kernel {
    /// Reads `<cache>/kernel/env` (stable) or `<cache>/kernel-newest/env` written by
    /// `provision.sh` (cache: `$FENCED_CACHE_DIR` or `<repo>/.cache`).
    pub fn locate(line: KernelLine) -> Result<Kernel> {
        let cache = std::env::var_os("FENCED_CACHE_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| crate::repo_root().join(".cache"));
        let env = cache.join(line.cache_dir()).join("env");
        let text = std::fs::read_to_string(&env).map_err(|_| Error::NoKernel(env.clone()))?;
        let vars: HashMap<&str, &str> = text.lines().filter_map(|l| l.split_once('=')).collect();
        let get = |k: &str| -> Result<String> {
            vars.get(k)
                .map(|v| v.to_string())
                .ok_or_else(|| Error::NoKernel(env.clone()))
        };
        let kernel = Kernel {
            line,
            version: get("KERNEL_VERSION")?,
            image: get("KERNEL_IMAGE")?.into(),
            modules: get("KERNEL_MODULES")?.into(),
            headers: get("KERNEL_HEADERS").ok().map(PathBuf::from),
        };
        if !kernel.image.exists() || !kernel.modules.join("modules.dep").exists() {
            return Err(Error::NoKernel(env));
        }
        Ok(kernel)
    }

    /// The module files (relative to [`Kernel::modules`]) to load, in load order, so that
    /// `names` and all their dependencies are loaded. A module built into the kernel
    /// (`modules.builtin`) needs no file and is left out.
    pub(crate) fn module_load_order(&self, names: &[&str]) -> Result<Vec<String>> {
        let builtin: HashSet<String> =
            std::fs::read_to_string(self.modules.join("modules.builtin"))
                .unwrap_or_default()
                .lines()
                .map(module_name)
                .collect();
        let dep_text = std::fs::read_to_string(self.modules.join("modules.dep"))
            .ctx(|| format!("reading modules.dep of {}", self.version))?;
        let mut deps: HashMap<String, Vec<String>> = HashMap::new();
        let mut by_name: HashMap<String, String> = HashMap::new();
        for line in dep_text.lines() {
            let Some((module, rest)) = line.split_once(':') else {
                continue;
            };
            let list = rest.split_whitespace().map(String::from).collect();
            by_name.insert(module_name(module), module.to_string());
            deps.insert(module.to_string(), list);
        }
        let mut order = Vec::new();
        let mut seen = HashSet::new();
        for name in names {
            if builtin.contains(&name.replace('-', "_")) {
                continue;
            }
            let module = by_name
                .get(&name.replace('-', "_"))
                .ok_or_else(|| Error::Setup(format!("module {name} is not in {}", self.version)))?;
            visit(module, &deps, &mut seen, &mut order);
        }
        Ok(order)
    }

    /// Builds the fault-injection module `name` (a directory under `kmod-testing/modules/`)
    /// against this kernel's headers, once per test process, and returns the `.ko` path.
    pub fn build_module(&self, name: &str) -> Result<PathBuf> {
        let Some(headers) = &self.headers else {
            return Err(Error::Setup(format!(
                "kernel module {name} cannot be built for {}: the harness has no headers for the \
                 newest kernel (its kbuild needs gcc 16 and glibc 2.38, newer than Debian 12's); \
                 run this test on the stable kernel",
                self.version
            )));
        };
        static BUILT: OnceLock<Mutex<HashMap<String, PathBuf>>> = OnceLock::new();
        let built = BUILT.get_or_init(Default::default);
        let mut built = built.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(p) = built.get(name) {
            return Ok(p.clone());
        }
        let src = crate::repo_root().join("kmod-testing/modules").join(name);
        // Each test process builds into its own directory: nextest runs tests as processes.
        let out = crate::repo_root()
            .join("target/kmod")
            .join(format!("{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&out);
        std::fs::create_dir_all(&out).ctx(|| format!("creating {}", out.display()))?;
        for entry in std::fs::read_dir(&src).ctx(|| format!("reading {}", src.display()))? {
            let entry = entry.ctx(|| format!("reading {}", src.display()))?;
            std::fs::copy(entry.path(), out.join(entry.file_name()))
                .ctx(|| format!("copying {}", entry.path().display()))?;
        }
        let output = Command::new("make")
            .arg("-s")
            .arg("-C")
            .arg(headers)
            .arg(format!("M={}", out.display()))
            .arg("modules")
            .output()
            .map_err(|_| Error::MissingTool {
                tool: "make".into(),
            })?;
        let ko = out.join(format!("{name}.ko"));
        if !output.status.success() || !ko.exists() {
            return Err(Error::Setup(format!(
                "building kernel module {name} against {} failed:\n{}",
                headers.display(),
                String::from_utf8_lossy(&output.stderr)
            )));
        }
        built.insert(name.to_string(), ko.clone());
        Ok(ko)
    }
}

fn module_name(path: &str) -> String {
    let file = Path::new(path)
        .file_name()
        .and_then(|f| f.to_str())
        .unwrap_or_default();
    let file = [".xz", ".zst", ".gz"]
        .iter()
        .find_map(|c| file.strip_suffix(c))
        .unwrap_or(file);
    file.trim_end_matches(".ko").replace('-', "_")
}

/// The bytes of module file `path`, decompressed where the kernel package compressed it (the
/// initramfs's busybox `insmod` loads only plain `.ko` files), and the plain file name.
pub(crate) fn read_module(path: &Path) -> Result<(Vec<u8>, String)> {
    let name = path
        .file_name()
        .and_then(|f| f.to_str())
        .unwrap_or_default()
        .to_string();
    let Some(plain) = name.strip_suffix(".xz") else {
        let data = std::fs::read(path).ctx(|| format!("reading module {}", path.display()))?;
        return Ok((data, name));
    };
    let out = Command::new("xz")
        .arg("-dc")
        .arg(path)
        .output()
        .map_err(|_| Error::MissingTool {
            tool: "xz (Debian package xz-utils)".into(),
        })?;
    if !out.status.success() {
        return Err(Error::Setup(format!(
            "xz could not decompress {}: {}",
            path.display(),
            String::from_utf8_lossy(&out.stderr)
        )));
    }
    Ok((out.stdout, plain.to_string()))
}

fn visit(
    module: &str,
    deps: &HashMap<String, Vec<String>>,
    seen: &mut HashSet<String>,
    order: &mut Vec<String>,
) {
    if !seen.insert(module.to_string()) {
        return;
    }
    for dep in deps.get(module).into_iter().flatten() {
        visit(dep, deps, seen, order);
    }
    order.push(module.to_string());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn module_names_drop_compression_and_ko_suffixes() {
        assert_eq!(module_name("kernel/fs/9p/9p.ko.xz"), "9p");
        assert_eq!(
            module_name("kernel/drivers/nvme/target/nvmet-tcp.ko.xz"),
            "nvmet_tcp"
        );
        assert_eq!(
            module_name("kernel/drivers/virtio/virtio_pci.ko"),
            "virtio_pci"
        );
        assert_eq!(module_name("kernel/fs/overlayfs/overlay.ko.zst"), "overlay");
    }
}
