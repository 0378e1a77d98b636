//! The workload image: a `FROM scratch` image holding this very binary and the shared
//! libraries it needs, tagged by content, built locally when missing (never pulled).
use std::{
    collections::HashMap,
    fmt::Write as _,
    path::{Path, PathBuf},
    process::Command,
};

use sha2::{Digest as _, Sha256};

use super::engine::{Docker, DockerError, LABEL};
use crate::errors::one_line;

/// Repository of the workload image; the tag is derived from its content ([`image_tag`]).
pub const IMAGE_REPO: &str = "dockertrace-workload";

/// Where the binary lives inside the workload image (its entrypoint).
const IMAGE_EXE: &str = "/dockertrace";

/// Shared libraries named by `ldd` output, in order, without duplicates: each `=> /path` and
/// the dynamic loader line (`/lib64/ld-linux-x86-64.so.2 (0x…)`). Entries without a file
/// (`linux-vdso.so.1`) and unresolved ones (`=> not found`) are left out; see [`ldd_missing`].
pub fn ldd_libraries(ldd_output: &str) -> Vec<PathBuf> {
    let mut libs: Vec<PathBuf> = Vec::new();
    for line in ldd_output.lines() {
        let line = line.trim();
        let path = match line.split_once("=>") {
            Some((_, rest)) => rest.trim(),
            None => line,
        };
        // Cut the load address: "/path (0x…)".
        let path = path.split(" (").next().unwrap_or_default().trim();
        if path.starts_with('/') {
            let p = PathBuf::from(path);
            if !libs.contains(&p) {
                libs.push(p);
            }
        }
    }
    libs
}

/// Libraries `ldd` could not resolve (`libfoo.so => not found`).
pub fn ldd_missing(ldd_output: &str) -> Vec<String> {
    ldd_output
        .lines()
        .filter_map(|l| l.split_once("=>"))
        .filter(|(_, rest)| rest.trim() == "not found")
        .map(|(name, _)| name.trim().to_owned())
        .collect()
}

/// The workload image tag for a content digest: `dockertrace-workload:<first 16 hex digits>`.
pub fn image_tag(bytes_hash: &[u8]) -> String {
    let mut tag = format!("{IMAGE_REPO}:");
    for b in bytes_hash.iter().take(8) {
        // Writing to a String cannot fail.
        let _ = write!(tag, "{b:02x}");
    }
    tag
}

/// The workload image's Dockerfile; the files are under `rootfs/` in the build context.
fn dockerfile() -> String {
    format!("FROM scratch\nCOPY rootfs/ /\nLABEL {LABEL}=image\nENTRYPOINT [\"{IMAGE_EXE}\"]\n")
}

/// One file of the workload image: its path in the image, where its bytes are, its size and
/// mode. The bytes are read when hashing (streamed) and when building, never held meanwhile: the
/// tracer's memory stays small when the image already exists.
struct ImageFile {
    path: String,
    source: PathBuf,
    len: u64,
    mode: u32,
}

/// The files of the workload image and the tag derived from them.
struct ImageContent {
    tag: String,
    files: Vec<ImageFile>,
}

impl ImageContent {
    /// Hashes `exe` and the libraries `ldd` names for it (following symlinks).
    fn collect(exe: &Path) -> Result<ImageContent, DockerError> {
        let ctx = |what: &str, p: &Path, e: std::io::Error| {
            DockerError::ImageContext(format!("{what} {}: {e}", p.display()))
        };
        // `ldd /proc/self/exe` would describe the loader itself: resolve the link first.
        let exe = std::fs::canonicalize(exe).map_err(|e| ctx("cannot resolve", exe, e))?;
        let out = Command::new("ldd")
            .arg(&exe)
            .output()
            .map_err(|e| DockerError::ImageContext(format!("cannot run `ldd {}`: {e}", exe.display())))?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        let is_static = format!("{stdout}{stderr}").contains("not a dynamic executable")
            || stdout.contains("statically linked");
        if !out.status.success() && !is_static {
            return Err(DockerError::ImageContext(format!(
                "`ldd {}` failed: {}",
                exe.display(),
                one_line(&stderr)
            )));
        }
        let missing = ldd_missing(&stdout);
        if !missing.is_empty() {
            return Err(DockerError::ImageContext(format!(
                "{} needs libraries that are not installed: {}",
                exe.display(),
                missing.join(", ")
            )));
        }
        let mut files = vec![(IMAGE_EXE.to_owned(), exe.clone())];
        // Reads follow symlinks: the real bytes go under the link's path.
        files.extend(ldd_libraries(&stdout).into_iter().map(|lib| (lib.to_string_lossy().into_owned(), lib)));
        // The recipe is part of the content: changing it retags the image.
        let mut hash = Sha256::new();
        hash.update(dockerfile().as_bytes());
        let mut out = Vec::with_capacity(files.len());
        for (path, source) in files {
            let mut f = std::fs::File::open(&source).map_err(|e| ctx("cannot read", &source, e))?;
            let len = f.metadata().map_err(|e| ctx("cannot read", &source, e))?.len();
            hash.update(path.as_bytes());
            hash.update([0]);
            hash.update(len.to_le_bytes());
            let mut buf = vec![0u8; 1 << 16];
            let mut seen = 0u64;
            loop {
                let n = std::io::Read::read(&mut f, &mut buf).map_err(|e| ctx("cannot read", &source, e))?;
                if n == 0 {
                    break;
                }
                hash.update(&buf[..n]);
                seen += n as u64;
            }
            if seen != len {
                return Err(ctx(
                    "cannot read",
                    &source,
                    std::io::Error::other("the file changed while read"),
                ));
            }
            out.push(ImageFile { path, source, len, mode: 0o755 });
        }
        Ok(ImageContent { tag: image_tag(&hash.finalize()), files: out })
    }

    /// Total size of the files.
    fn size(&self) -> usize {
        self.files.iter().map(|f| f.len as usize).sum()
    }

    /// The build context: a Dockerfile and the files under `rootfs/`, as a tar archive.
    fn build_context(&self) -> Result<Vec<u8>, DockerError> {
        let dockerfile = dockerfile();
        let mut tar = tar::Builder::new(Vec::with_capacity(self.size() + 64 * 1024));
        let mut append = |path: &str, data: &[u8], mode: u32| {
            let mut header = tar::Header::new_gnu();
            header.set_size(data.len() as u64);
            header.set_mode(mode);
            header.set_mtime(0);
            header.set_entry_type(tar::EntryType::Regular);
            tar.append_data(&mut header, path, data).map_err(|e| {
                DockerError::ImageContext(format!("cannot add {path} to the build context: {e}"))
            })
        };
        append("Dockerfile", dockerfile.as_bytes(), 0o644)?;
        for f in &self.files {
            let data = std::fs::read(&f.source)
                .map_err(|e| DockerError::ImageContext(format!("cannot read {}: {e}", f.source.display())))?;
            append(&format!("rootfs{}", f.path), &data, f.mode)?;
        }
        tar.into_inner()
            .map_err(|e| DockerError::ImageContext(format!("cannot finish the build context: {e}")))
    }
}

/// Building the workload image.
impl Docker {
    /// The workload image built from this process's own binary; see [`Docker::ensure_image_from`].
    pub async fn ensure_workload_image(
        &self,
        progress: &(dyn Fn(&str) + Send + Sync),
    ) -> Result<String, DockerError> {
        self.ensure_image_from(Path::new("/proc/self/exe"), progress).await
    }

    /// The workload image for `exe`: a `FROM scratch` image holding `exe` at `/dockertrace`
    /// (the entrypoint) and the shared libraries it needs at their absolute paths, tagged by
    /// content (`dockertrace-workload:<16 hex>`). Built locally when the tag does not exist yet,
    /// otherwise reused; never pulled. Returns the tag.
    pub async fn ensure_image_from(
        &self,
        exe: &Path,
        progress: &(dyn Fn(&str) + Send + Sync),
    ) -> Result<String, DockerError> {
        progress("hashing the workload binary and its libraries");
        let exe_owned = exe.to_owned();
        let content = tokio::task::spawn_blocking(move || ImageContent::collect(&exe_owned))
            .await
            .map_err(|e| DockerError::ImageContext(format!("the hashing task failed: {e}")))??;
        let tag = content.tag.clone();
        if self.image_exists(&tag).await? {
            progress(&format!("using image {tag}"));
            return Ok(tag);
        }
        let mb = content.size().div_ceil(1_000_000);
        progress(&format!("building image {tag} ({mb} MB)"));
        let context = tokio::task::spawn_blocking(move || content.build_context())
            .await
            .map_err(|e| DockerError::ImageContext(format!("the packing task failed: {e}")))??;
        let labels = HashMap::from([(LABEL.to_owned(), "image".to_owned())]);
        self.build_image(&tag, context, &labels).await?;
        Ok(tag)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LDD: &str = "\tlinux-vdso.so.1 (0x00007ffd6b3f2000)
\tlibgcc_s.so.1 => /lib/x86_64-linux-gnu/libgcc_s.so.1 (0x00007f0a8c2a0000)
\tlibm.so.6 => /lib/x86_64-linux-gnu/libm.so.6 (0x00007f0a8c1c1000)
\tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f0a8bfe0000)
\t/lib64/ld-linux-x86-64.so.2 (0x00007f0a8c2e0000)
";

    #[test]
    fn ldd_libraries_parses_arrows_and_the_loader() {
        let libs = ldd_libraries(LDD);
        let want: Vec<PathBuf> = [
            "/lib/x86_64-linux-gnu/libgcc_s.so.1",
            "/lib/x86_64-linux-gnu/libm.so.6",
            "/lib/x86_64-linux-gnu/libc.so.6",
            "/lib64/ld-linux-x86-64.so.2",
        ]
        .iter()
        .map(PathBuf::from)
        .collect();
        assert_eq!(libs, want);
        assert!(ldd_missing(LDD).is_empty());
    }

    #[test]
    fn ldd_libraries_skips_vdso_missing_and_static() {
        assert!(ldd_libraries("\tlinux-vdso.so.1 (0x00007ffd6b3f2000)\n").is_empty());
        assert!(ldd_libraries("\tnot a dynamic executable\n").is_empty());
        assert!(ldd_libraries("\tstatically linked\n").is_empty());
        let missing = "\tlibfoo.so.1 => not found\n\tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x1)\n";
        assert_eq!(ldd_libraries(missing), vec![PathBuf::from("/lib/x86_64-linux-gnu/libc.so.6")]);
        assert_eq!(ldd_missing(missing), vec!["libfoo.so.1".to_owned()]);
        // Duplicates (the loader named twice) collapse.
        let dup = "\t/lib64/ld-linux-x86-64.so.2 (0x1)\n\tld-linux-x86-64.so.2 => /lib64/ld-linux-x86-64.so.2 (0x1)\n";
        assert_eq!(ldd_libraries(dup).len(), 1);
    }

    #[test]
    fn image_tag_takes_16_hex_digits() {
        let digest: Vec<u8> = (0u8..32).collect();
        assert_eq!(image_tag(&digest), "dockertrace-workload:0001020304050607");
        assert_eq!(image_tag(&[0xab, 0xcd]), "dockertrace-workload:abcd");
        let real = Sha256::digest(b"dockertrace");
        let tag = image_tag(&real);
        assert_eq!(tag.len(), "dockertrace-workload:".len() + 16);
        assert!(tag.rsplit(':').next().is_some_and(|h| h.chars().all(|c| c.is_ascii_hexdigit())));
    }
}
