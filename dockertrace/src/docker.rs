//! A small async wrapper over the Docker Engine API ([`bollard`]) with exactly what the modes
//! need: the workload image (built locally from this very binary, never pulled), networks,
//! containers, `exec`, and the label-based cleanup of crashed runs.
//!
//! The client negotiates the API version with the engine, so Debian's dockerd 20.10 (API 1.41)
//! works as well as current engines. Every object dockertrace creates carries the label
//! [`LABEL`]`=<run id>`, which is what `dockertrace cleanup` looks for.
use std::{
    collections::HashMap,
    fmt::Write as _,
    net::IpAddr,
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use bollard::{
    errors::Error as ApiError,
    exec::{CreateExecOptions, StartExecResults},
    models::{
        ContainerCreateBody, ContainerInspectResponse, EndpointIpamConfig, EndpointSettings, HostConfig,
        Ipam, IpamConfig, NetworkCreateRequest, NetworkingConfig,
    },
    query_parameters::{
        BuildImageOptionsBuilder, CreateContainerOptionsBuilder, ListContainersOptionsBuilder,
        ListNetworksOptionsBuilder, LogsOptionsBuilder, RemoveContainerOptionsBuilder,
        RemoveImageOptionsBuilder,
    },
    Docker as Api,
};
use futures_util::StreamExt as _;
use sha2::{Digest as _, Sha256};

/// Label key on every object dockertrace creates; the value is the run id (`image` on images).
pub const LABEL: &str = "dockertrace";

/// Repository of the workload image; the tag is derived from its content ([`image_tag`]).
pub const IMAGE_REPO: &str = "dockertrace-workload";

/// The engine's socket when `DOCKER_HOST` is unset.
const DEFAULT_HOST: &str = "unix:///var/run/docker.sock";

/// Where the binary lives inside the workload image (its entrypoint).
const IMAGE_EXE: &str = "/dockertrace";

/// Errors of the Docker layer; every message is one line.
#[derive(Debug, thiserror::Error)]
pub enum DockerError {
    /// The engine does not answer at all.
    #[error(
        "cannot reach the Docker engine at {host} ({reason}): start it with `sudo systemctl start docker`, \
         `sudo dockerd &`, or `cargo xtask setup`"
    )]
    Unreachable { host: String, reason: String },
    /// The object an operation refers to does not exist.
    #[error("{action}: not found ({message})")]
    NotFound { action: String, message: String },
    /// The engine refused a request.
    #[error("{action}: the Docker engine answered {status}: {message}")]
    Api { action: String, status: u16, message: String },
    /// The request failed on the way (connection dropped, timeout, bad answer).
    #[error("{action}: {reason}")]
    Request { action: String, reason: String },
    /// Collecting the files of the workload image failed.
    #[error("cannot prepare the workload image: {0}")]
    ImageContext(String),
    /// The engine reported an error while building the workload image.
    #[error("building image {image} failed: {message}")]
    Build { image: String, message: String },
    /// A container was started but is not running.
    #[error("container {name} stopped right after starting ({state}); its output: {logs}")]
    NotRunning { name: String, state: String, logs: String },
    /// The engine's answer lacks something we rely on.
    #[error("{action}: unexpected answer from the Docker engine: {detail}")]
    Unexpected { action: String, detail: String },
}

impl DockerError {
    /// The referenced object does not exist.
    pub fn is_not_found(&self) -> bool {
        matches!(self, DockerError::NotFound { .. })
    }
}

/// Collapses whitespace runs (newlines included) so every message stays on one line.
fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// An error and its sources, `a: b: c`, without repeating a source already in the message.
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    one_line(&out)
}

/// Maps a bollard error for `action` (a short phrase such as "removing container x").
fn api_error(action: impl Into<String>) -> impl FnOnce(ApiError) -> DockerError {
    move |e| {
        let action = action.into();
        match e {
            ApiError::DockerResponseServerError { status_code: 404, message } => {
                DockerError::NotFound { action, message: one_line(&message) }
            }
            ApiError::DockerResponseServerError { status_code, message } => {
                DockerError::Api { action, status: status_code, message: one_line(&message) }
            }
            other => DockerError::Request { action, reason: chain(&other) },
        }
    }
}

/// Maps "not found" to `Ok(())`, for idempotent removals.
fn ok_if_not_found(r: Result<(), DockerError>) -> Result<(), DockerError> {
    match r {
        Err(e) if e.is_not_found() => Ok(()),
        other => other,
    }
}

/// A Docker network to create.
#[derive(Debug, Clone, Default)]
pub struct NetworkSpec {
    pub name: String,
    /// `bridge`, `macvlan` or `ipvlan`.
    pub driver: String,
    /// IPAM subnet in CIDR notation (default: the engine picks one).
    pub subnet: Option<String>,
    /// IPAM gateway (default: the engine picks one).
    pub gateway: Option<String>,
    /// Driver options, e.g. `parent`, `macvlan_mode`, `ipvlan_mode`.
    pub options: HashMap<String, String>,
    pub labels: HashMap<String, String>,
}

/// A created network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkInfo {
    pub id: String,
    pub name: String,
    /// Linux bridge device for bridge networks (`br-<id12>` or the
    /// `com.docker.network.bridge.name` option), else `None`.
    pub bridge_dev: Option<String>,
}

/// A container to run.
#[derive(Debug, Clone, Default)]
pub struct ContainerSpec {
    pub name: String,
    pub image: String,
    /// Arguments to the image's entrypoint.
    pub cmd: Vec<String>,
    /// `bridge` (docker0), `host`, or a network name.
    pub network: String,
    /// Fixed address on a user-defined network (default: assigned by the engine).
    pub ip: Option<IpAddr>,
    pub labels: HashMap<String, String>,
}

/// A running container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerInfo {
    pub id: String,
    pub name: String,
    /// Init pid on the host (for `/proc/PID/ns/net`).
    pub pid: u32,
    /// The container's address on its network (`None` for host networking).
    pub ip: Option<IpAddr>,
}

/// What a command run with [`Docker::exec`] produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecOutput {
    pub exit_code: i64,
    pub stdout: String,
    pub stderr: String,
}

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

/// A connection to the Docker engine.
#[derive(Debug, Clone)]
pub struct Docker {
    api: Api,
}

impl Docker {
    /// Connects (honours `DOCKER_HOST`: `unix://`, `tcp://`, `http://`) and negotiates the API
    /// version, so older engines (20.10, API 1.41) work.
    pub async fn connect() -> Result<Docker, DockerError> {
        let host = std::env::var("DOCKER_HOST").unwrap_or_else(|_| DEFAULT_HOST.to_owned());
        let unreachable = |reason: String| DockerError::Unreachable { host: host.clone(), reason };
        let api = Api::connect_with_defaults().map_err(|e| unreachable(chain(&e)))?;
        match api.negotiate_version().await {
            Ok(api) => Ok(Docker { api }),
            Err(e @ ApiError::DockerResponseServerError { .. }) => {
                Err(api_error("negotiating the API version")(e))
            }
            Err(e) => Err(unreachable(chain(&e))),
        }
    }

    /// The engine's version and the API version in use, e.g. `20.10.24 (API 1.41)`.
    pub async fn server_version(&self) -> Result<String, DockerError> {
        let v = self.api.version().await.map_err(api_error("asking the engine version"))?;
        let version = v.version.unwrap_or_else(|| "unknown version".to_owned());
        let used = self.api.client_version();
        Ok(format!("{version} (API {}.{})", used.major_version, used.minor_version))
    }

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
        let options = BuildImageOptionsBuilder::new()
            .dockerfile("Dockerfile")
            .t(&tag)
            .rm(true)
            .forcerm(true)
            .labels(&HashMap::from([(LABEL.to_owned(), "image".to_owned())]))
            .build();
        let mut stream = self.api.build_image(options, None, Some(bollard::body_full(context.into())));
        let mut last = String::new();
        while let Some(item) = stream.next().await {
            let info = item.map_err(|e| match api_error(format!("building image {tag}"))(e) {
                DockerError::Api { message, .. } | DockerError::NotFound { message, .. } => {
                    DockerError::Build { image: tag.clone(), message }
                }
                other => other,
            })?;
            if let Some(detail) = info.error_detail {
                let message = detail.message.unwrap_or_else(|| "unknown error".to_owned());
                return Err(DockerError::Build { image: tag, message: one_line(&message) });
            }
            if let Some(s) = info.stream.as_deref().map(str::trim).filter(|s| !s.is_empty()) {
                log::debug!("docker build: {s}");
                last = s.to_owned();
            }
        }
        if !self.image_exists(&tag).await? {
            return Err(DockerError::Build {
                image: tag,
                message: format!("no image after the build (last output: {last})"),
            });
        }
        Ok(tag)
    }

    /// Whether `image` (name:tag or id) exists locally.
    pub async fn image_exists(&self, image: &str) -> Result<bool, DockerError> {
        match self.api.inspect_image(image).await.map_err(api_error(format!("inspecting image {image}"))) {
            Ok(_) => Ok(true),
            Err(e) if e.is_not_found() => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// The image id of `image`, e.g. `sha256:…`.
    pub async fn image_id(&self, image: &str) -> Result<String, DockerError> {
        let action = format!("inspecting image {image}");
        let i = self.api.inspect_image(image).await.map_err(api_error(action.clone()))?;
        i.id.ok_or_else(|| DockerError::Unexpected { action, detail: "no image id".into() })
    }

    /// Creates a network; fails if one with that name exists already.
    pub async fn create_network(&self, spec: &NetworkSpec) -> Result<NetworkInfo, DockerError> {
        let action = format!("creating network {}", spec.name);
        // API 1.41 only refuses duplicate names when asked to (CheckDuplicate, which the
        // request type here no longer carries): check first.
        match self.api.inspect_network(&spec.name, None).await {
            Ok(n) if n.name.as_deref() == Some(spec.name.as_str()) => {
                return Err(DockerError::Api {
                    action,
                    status: 409,
                    message: format!(
                        "a network named {} exists already (try `dockertrace cleanup`)",
                        spec.name
                    ),
                });
            }
            _ => {}
        }
        let ipam = (spec.subnet.is_some() || spec.gateway.is_some()).then(|| Ipam {
            driver: Some("default".into()),
            config: Some(vec![IpamConfig {
                subnet: spec.subnet.clone(),
                gateway: spec.gateway.clone(),
                ..Default::default()
            }]),
            options: None,
        });
        let request = NetworkCreateRequest {
            name: spec.name.clone(),
            driver: Some(spec.driver.clone()),
            ipam,
            options: Some(spec.options.clone()),
            labels: Some(spec.labels.clone()),
            ..Default::default()
        };
        let created = self.api.create_network(request).await.map_err(api_error(action.clone()))?;
        if created.warning.contains("already exists") {
            // Lost a race with another creator: API 1.41 made a second network of that name.
            self.remove_network(&created.id).await?;
            return Err(DockerError::Api { action, status: 409, message: one_line(&created.warning) });
        }
        let net = self
            .api
            .inspect_network(&created.id, None)
            .await
            .map_err(api_error(format!("inspecting network {}", spec.name)))?;
        let driver = net.driver.as_deref().unwrap_or(&spec.driver);
        let bridge_dev = (driver == "bridge").then(|| {
            net.options
                .as_ref()
                .and_then(|o| o.get("com.docker.network.bridge.name"))
                .cloned()
                .unwrap_or_else(|| format!("br-{}", created.id.get(..12).unwrap_or(&created.id)))
        });
        Ok(NetworkInfo { id: created.id, name: spec.name.clone(), bridge_dev })
    }

    /// Removes a network by id or name; a missing one is fine.
    pub async fn remove_network(&self, id: &str) -> Result<(), DockerError> {
        ok_if_not_found(
            self.api.remove_network(id).await.map_err(api_error(format!("removing network {id}"))),
        )
    }

    /// Creates, starts and inspects a container; returns once it is running.
    pub async fn run_container(&self, spec: &ContainerSpec) -> Result<ContainerInfo, DockerError> {
        let user_network = !matches!(spec.network.as_str(), "bridge" | "host" | "none" | "default")
            && !spec.network.starts_with("container:");
        let networking_config = spec.ip.filter(|_| user_network).map(|ip| {
            let ipam = match ip {
                IpAddr::V4(v4) => {
                    EndpointIpamConfig { ipv4_address: Some(v4.to_string()), ..Default::default() }
                }
                IpAddr::V6(v6) => {
                    EndpointIpamConfig { ipv6_address: Some(v6.to_string()), ..Default::default() }
                }
            };
            NetworkingConfig {
                endpoints_config: Some(HashMap::from([(
                    spec.network.clone(),
                    EndpointSettings { ipam_config: Some(ipam), ..Default::default() },
                )])),
            }
        });
        if spec.ip.is_some() && !user_network {
            return Err(DockerError::Api {
                action: format!("creating container {}", spec.name),
                status: 400,
                message: format!("a fixed address needs a user-defined network, not `{}`", spec.network),
            });
        }
        let body = ContainerCreateBody {
            image: Some(spec.image.clone()),
            cmd: Some(spec.cmd.clone()),
            labels: Some(spec.labels.clone()),
            host_config: Some(HostConfig {
                network_mode: Some(spec.network.clone()),
                auto_remove: Some(false),
                ..Default::default()
            }),
            networking_config,
            ..Default::default()
        };
        let options = CreateContainerOptionsBuilder::new().name(&spec.name).build();
        let created = self
            .api
            .create_container(Some(options), body)
            .await
            .map_err(api_error(format!("creating container {}", spec.name)))?;
        self.api
            .start_container(&created.id, None)
            .await
            .map_err(api_error(format!("starting container {}", spec.name)))?;
        let action = format!("inspecting container {}", spec.name);
        let inspect =
            self.api.inspect_container(&created.id, None).await.map_err(api_error(action.clone()))?;
        let state = inspect.state.as_ref();
        if state.and_then(|s| s.running) != Some(true) {
            let logs = self.logs(&created.id).await.unwrap_or_else(|e| format!("(no logs: {e})"));
            let state = state
                .map(|s| {
                    format!(
                        "{}, exit code {}",
                        s.status.map_or_else(|| "unknown".to_owned(), |st| st.to_string()),
                        s.exit_code.unwrap_or(-1)
                    )
                })
                .unwrap_or_else(|| "no state".to_owned());
            return Err(DockerError::NotRunning { name: spec.name.clone(), state, logs: one_line(&logs) });
        }
        let pid =
            state.and_then(|s| s.pid).and_then(|p| u32::try_from(p).ok()).filter(|p| *p > 0).ok_or_else(
                || DockerError::Unexpected { action: action.clone(), detail: "no host pid".into() },
            )?;
        let ip = container_ip(&inspect, &spec.network);
        Ok(ContainerInfo { id: created.id, name: spec.name.clone(), pid, ip })
    }

    /// Runs `cmd` in a running container and waits for it; returns its exit code and output.
    pub async fn exec(&self, container_id: &str, cmd: &[String]) -> Result<ExecOutput, DockerError> {
        let action = format!("running {:?} in container {container_id}", cmd.join(" "));
        let created = self
            .api
            .create_exec(
                container_id,
                CreateExecOptions::<String> {
                    attach_stdout: Some(true),
                    attach_stderr: Some(true),
                    attach_stdin: Some(false),
                    tty: Some(false),
                    cmd: Some(cmd.to_vec()),
                    ..Default::default()
                },
            )
            .await
            .map_err(api_error(action.clone()))?;
        let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
        match self.api.start_exec(&created.id, None).await.map_err(api_error(action.clone()))? {
            StartExecResults::Attached { mut output, input } => {
                drop(input);
                while let Some(chunk) = output.next().await {
                    match chunk.map_err(api_error(action.clone()))? {
                        bollard::container::LogOutput::StdErr { message } => {
                            stderr.extend_from_slice(&message)
                        }
                        bollard::container::LogOutput::StdOut { message }
                        | bollard::container::LogOutput::Console { message } => {
                            stdout.extend_from_slice(&message)
                        }
                        bollard::container::LogOutput::StdIn { .. } => {}
                    }
                }
            }
            StartExecResults::Detached => {
                return Err(DockerError::Unexpected { action, detail: "the exec started detached".into() });
            }
        }
        // The stream ends when the process closes its output; the exit code follows shortly.
        let mut delay = Duration::from_millis(10);
        for _ in 0..40 {
            let inspect = self.api.inspect_exec(&created.id).await.map_err(api_error(action.clone()))?;
            if inspect.running != Some(true) {
                if let Some(exit_code) = inspect.exit_code {
                    return Ok(ExecOutput {
                        exit_code,
                        stdout: String::from_utf8_lossy(&stdout).into_owned(),
                        stderr: String::from_utf8_lossy(&stderr).into_owned(),
                    });
                }
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_millis(500));
        }
        Err(DockerError::Unexpected {
            action,
            detail: "the command closed its output but did not exit".into(),
        })
    }

    /// Removes a container by id or name (forcefully, with its anonymous volumes); a missing
    /// one is fine.
    pub async fn remove_container(&self, id: &str) -> Result<(), DockerError> {
        let options = RemoveContainerOptionsBuilder::new().force(true).v(true).build();
        ok_if_not_found(
            self.api
                .remove_container(id, Some(options))
                .await
                .map_err(api_error(format!("removing container {id}"))),
        )
    }

    /// The container's stdout and stderr so far, interleaved (for error messages).
    pub async fn logs(&self, id: &str) -> Result<String, DockerError> {
        let options = LogsOptionsBuilder::new().stdout(true).stderr(true).follow(false).tail("all").build();
        let mut stream = self.api.logs(id, Some(options));
        let mut out = Vec::new();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(api_error(format!("reading the logs of container {id}")))?;
            out.extend_from_slice(&chunk.into_bytes());
        }
        Ok(String::from_utf8_lossy(&out).into_owned())
    }

    /// `dockertrace cleanup`: removes every container, then every network, carrying the label
    /// key [`LABEL`] (any value). Returns how many containers and networks were removed.
    pub async fn remove_all_labelled(&self) -> Result<(usize, usize), DockerError> {
        self.remove_labelled(None).await
    }

    /// Removes the containers, then the networks, labelled [`LABEL`]`=<run>` (any value when
    /// `run` is `None`). Returns how many containers and networks were removed.
    pub async fn remove_labelled(&self, run: Option<&str>) -> Result<(usize, usize), DockerError> {
        let containers = self.labelled_containers(run).await?;
        for c in &containers {
            self.remove_container(c).await?;
        }
        let networks = self.labelled_networks(run).await?;
        for n in &networks {
            self.remove_network(n).await?;
        }
        Ok((containers.len(), networks.len()))
    }

    /// Ids of the containers (running or not) labelled [`LABEL`]`=<run>` (any value for `None`).
    pub async fn labelled_containers(&self, run: Option<&str>) -> Result<Vec<String>, DockerError> {
        let options = ListContainersOptionsBuilder::new().all(true).filters(&label_filter(run)).build();
        let list = self
            .api
            .list_containers(Some(options))
            .await
            .map_err(api_error("listing labelled containers"))?;
        Ok(list.into_iter().filter_map(|c| c.id).collect())
    }

    /// Ids of the networks labelled [`LABEL`]`=<run>` (any value for `None`).
    pub async fn labelled_networks(&self, run: Option<&str>) -> Result<Vec<String>, DockerError> {
        let options = ListNetworksOptionsBuilder::new().filters(&label_filter(run)).build();
        let list =
            self.api.list_networks(Some(options)).await.map_err(api_error("listing labelled networks"))?;
        Ok(list.into_iter().filter_map(|n| n.id).collect())
    }

    /// Removes an image by tag or id (forcefully); a missing one is fine. Not used by the
    /// runs (the workload image is a cache keyed by content), but by tests and chores.
    pub async fn remove_image(&self, image: &str) -> Result<(), DockerError> {
        let options = RemoveImageOptionsBuilder::new().force(true).build();
        ok_if_not_found(
            self.api
                .remove_image(image, Some(options), None)
                .await
                .map(drop)
                .map_err(api_error(format!("removing image {image}"))),
        )
    }
}

/// The `label` filter for [`LABEL`] (any value) or [`LABEL`]`=<run>`.
fn label_filter(run: Option<&str>) -> HashMap<String, Vec<String>> {
    let label = match run {
        Some(run) => format!("{LABEL}={run}"),
        None => LABEL.to_owned(),
    };
    HashMap::from([("label".to_owned(), vec![label])])
}

/// The container's address on `network` (or on its only network); `None` for host networking.
fn container_ip(inspect: &ContainerInspectResponse, network: &str) -> Option<IpAddr> {
    let networks = inspect.network_settings.as_ref()?.networks.as_ref()?;
    let parse = |e: &EndpointSettings| {
        e.ip_address
            .as_deref()
            .filter(|s| !s.is_empty())
            .or(e.global_ipv6_address.as_deref().filter(|s| !s.is_empty()))
            .and_then(|s| s.parse().ok())
    };
    networks.get(network).and_then(parse).or_else(|| networks.values().find_map(parse))
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

    #[test]
    fn messages_are_one_line() {
        let e = DockerError::Unreachable {
            host: "unix:///var/run/docker.sock".into(),
            reason: "No such file".into(),
        };
        let s = e.to_string();
        assert!(!s.contains('\n'), "{s}");
        assert!(s.starts_with(
            "cannot reach the Docker engine at unix:///var/run/docker.sock (No such file): start it"
        ));
        assert_eq!(one_line("a\n  b\tc\n"), "a b c");
        let e = api_error("removing x")(ApiError::DockerResponseServerError {
            status_code: 404,
            message: "no\nsuch".into(),
        });
        assert!(e.is_not_found());
        assert_eq!(e.to_string(), "removing x: not found (no such)");
    }
}
