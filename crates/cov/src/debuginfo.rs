//! Separate debug files, found the way gdb finds them: by build id under each debug
//! directory (`.build-id/xx/yyyy.debug`), by `.gnu_debuglink` name next to the file, in its
//! `.debug/` and under each debug directory, and in debuginfod's client cache
//! (`BUILDID/debuginfo`).

use object::Object;
use std::path::{Path, PathBuf};

/// Where to look for separate debug files.
#[derive(Debug, Clone)]
pub struct DebugSearch {
    /// Debug directories (`/usr/lib/debug` by default).
    pub dirs: Vec<PathBuf>,
    /// debuginfod's cache directory, where there is one.
    pub debuginfod_cache: Option<PathBuf>,
}

impl Default for DebugSearch {
    /// `/usr/lib/debug`, and debuginfod's cache as its client places it
    /// (`$DEBUGINFOD_CACHE_PATH`, else `$XDG_CACHE_HOME/debuginfod_client`, else
    /// `~/.cache/debuginfod_client`).
    fn default() -> DebugSearch {
        let env = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty()).map(PathBuf::from);
        let debuginfod_cache = env("DEBUGINFOD_CACHE_PATH")
            .or_else(|| env("XDG_CACHE_HOME").map(|c| c.join("debuginfod_client")))
            .or_else(|| env("HOME").map(|h| h.join(".cache/debuginfod_client")));
        DebugSearch { dirs: vec![PathBuf::from("/usr/lib/debug")], debuginfod_cache }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl DebugSearch {
    /// The separate debug file of `path` (parsed as `file`), if one is found whose build id
    /// (when both have one) matches.
    pub fn find(&self, path: &Path, file: &object::File<'_>) -> Option<PathBuf> {
        let build_id = file.build_id().ok().flatten().filter(|id| id.len() > 1);
        let mut candidates: Vec<PathBuf> = Vec::new();
        if let Some(id) = build_id {
            let (first, rest) = (hex(&id[..1]), hex(&id[1..]));
            candidates.extend(self.dirs.iter().map(|d| d.join(".build-id").join(&first).join(format!("{rest}.debug"))));
            candidates.extend(self.debuginfod_cache.iter().map(|c| c.join(hex(id)).join("debuginfo")));
        }
        if let Some((name, _crc)) = file.gnu_debuglink().ok().flatten() {
            let name = Path::new(std::str::from_utf8(name).ok()?);
            let real = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
            let dir = real.parent().unwrap_or(Path::new("/"));
            candidates.push(dir.join(name));
            candidates.push(dir.join(".debug").join(name));
            let relative = dir.strip_prefix("/").unwrap_or(dir);
            candidates.extend(self.dirs.iter().map(|d| d.join(relative).join(name)));
        }
        candidates.into_iter().find(|c| c.as_path() != path && c.is_file() && Self::matches(c, build_id))
    }

    fn matches(candidate: &Path, build_id: Option<&[u8]>) -> bool {
        let Some(want) = build_id else { return true };
        let Ok(data) = std::fs::read(candidate) else { return false };
        let Ok(debug) = object::File::parse(&*data) else { return false };
        debug.build_id().ok().flatten().is_none_or(|got| got == want)
    }
}
