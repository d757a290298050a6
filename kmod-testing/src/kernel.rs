//! The cached guest kernel (image, modules, headers) that `provision.sh` extracted.

use crate::error::{Error, IoContext, Result};
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, OnceLock};

/// A Debian kernel extracted under the cache directory.
#[derive(Debug, Clone)]
pub struct Kernel {
    /// `uname -r` of the guest, e.g. `6.1.0-56-amd64`.
    pub version: String,
    /// The bzImage.
    pub image: PathBuf,
    /// `lib/modules/<version>` with a `modules.dep`.
    pub modules: PathBuf,
    /// The headers tree to build out-of-tree modules against.
    pub headers: PathBuf,
}

impl Kernel {
    /// Reads `<cache>/kernel/env` written by `provision.sh` (cache: `$FENCED_CACHE_DIR` or
    /// `<repo>/.cache`).
    pub fn locate() -> Result<Kernel> {
        let cache = std::env::var_os("FENCED_CACHE_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| crate::repo_root().join(".cache"));
        let env = cache.join("kernel/env");
        let text = std::fs::read_to_string(&env).map_err(|_| Error::NoKernel(env.clone()))?;
        let vars: HashMap<&str, &str> = text.lines().filter_map(|l| l.split_once('=')).collect();
        let get = |k: &str| -> Result<String> {
            vars.get(k)
                .map(|v| v.to_string())
                .ok_or_else(|| Error::NoKernel(env.clone()))
        };
        let kernel = Kernel {
            version: get("KERNEL_VERSION")?,
            image: get("KERNEL_IMAGE")?.into(),
            modules: get("KERNEL_MODULES")?.into(),
            headers: get("KERNEL_HEADERS")?.into(),
        };
        if !kernel.image.exists() || !kernel.modules.join("modules.dep").exists() {
            return Err(Error::NoKernel(env));
        }
        Ok(kernel)
    }

    /// The module files (relative to [`Kernel::modules`]) to load, in load order, so that
    /// `names` and all their dependencies are loaded.
    pub(crate) fn module_load_order(&self, names: &[&str]) -> Result<Vec<String>> {
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
            .arg(&self.headers)
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
                self.headers.display(),
                String::from_utf8_lossy(&output.stderr)
            )));
        }
        built.insert(name.to_string(), ko.clone());
        Ok(ko)
    }
}

fn module_name(path: &str) -> String {
    Path::new(path)
        .file_name()
        .and_then(|f| f.to_str())
        .map(|f| f.trim_end_matches(".ko").replace('-', "_"))
        .unwrap_or_default()
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
