//! A small async wrapper over the Docker Engine API ([`bollard`]) with exactly what the modes
//! need: images (inspect, build from a context, remove), networks, containers, `exec`, and the
//! label-based cleanup of crashed runs.
//!
//! The client negotiates the API version with the engine, so Debian's dockerd 20.10 (API 1.41)
//! works as well as current engines. Every object dockertrace creates carries the label
//! [`LABEL`]`=<run id>`, which is what `dockertrace cleanup` looks for, and the owner labels
//! [`LABEL_PID`] and [`LABEL_START`] (the process that created it), by which a later run
//! tells a dead run's leftovers from a live run's objects.
use std::{collections::HashMap, net::IpAddr, time::Duration};

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

use crate::errors::{chain, one_line};

/// Label key on every object dockertrace creates; the value is the run id (`image` on images).
pub const LABEL: &str = "dockertrace";

/// Label with the pid of the process that created the object (runs' containers and networks).
pub const LABEL_PID: &str = "dockertrace.pid";

/// Label with the start time of that process (`/proc/PID/stat`), so a reused pid is not taken
/// for the run.
pub const LABEL_START: &str = "dockertrace.start";

/// The engine's socket when `DOCKER_HOST` is unset.
const DEFAULT_HOST: &str = "unix:///var/run/docker.sock";

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
    /// A container asked for by name exists but does not run.
    #[error("container {name} is not running ({state})")]
    Stopped { name: String, state: String },
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

/// Maps a bollard error for `action` (a short phrase such as "removing container x").
pub(super) fn api_error(action: impl Into<String>) -> impl FnOnce(ApiError) -> DockerError {
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
    /// Overlay networks: standalone containers may join (`--attachable`).
    pub attachable: bool,
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
    /// The CPUs the container may run on (`cpuset_cpus`, e.g. `0` or `0-1`; None: all).
    pub cpuset: Option<String>,
}

/// An engine's swarm membership.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SwarmState {
    /// `inactive`, `pending`, `active`, `error`, `locked`.
    pub state: String,
    pub active: bool,
    /// A manager (can create swarm networks and hand out join tokens).
    pub manager: bool,
    pub node_id: Option<String>,
    /// The address the node advertises.
    pub node_addr: Option<String>,
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

    /// Connects to the engine listening on the unix socket `path` (a second engine dockertrace
    /// started) and negotiates the API version.
    pub async fn connect_socket(path: &std::path::Path) -> Result<Docker, DockerError> {
        let host = format!("unix://{}", path.display());
        let unreachable = |reason: String| DockerError::Unreachable { host: host.clone(), reason };
        let api = Api::connect_with_unix(&host, 120, bollard::API_DEFAULT_VERSION)
            .map_err(|e| unreachable(chain(&e)))?;
        match api.negotiate_version().await {
            Ok(api) => Ok(Docker { api }),
            Err(e @ ApiError::DockerResponseServerError { .. }) => {
                Err(api_error("negotiating the API version")(e))
            }
            Err(e) => Err(unreachable(chain(&e))),
        }
    }

    /// Whether the engine answers (`/_ping`).
    pub async fn ping(&self) -> bool {
        self.api.ping().await.is_ok()
    }

    /// The engine's swarm membership (`docker info`'s Swarm section).
    pub async fn swarm_state(&self) -> Result<SwarmState, DockerError> {
        let info = self.api.info().await.map_err(api_error("asking the engine's swarm state"))?;
        let s = info.swarm.unwrap_or_default();
        let state = s.local_node_state.map_or_else(String::new, |st| st.to_string());
        Ok(SwarmState {
            active: state == "active",
            state: if state.is_empty() { "inactive".into() } else { state },
            manager: s.control_available.unwrap_or(false),
            node_id: s.node_id.filter(|n| !n.is_empty()),
            node_addr: s.node_addr.filter(|a| !a.is_empty()),
        })
    }

    /// `docker swarm init --advertise-addr ADDR --listen-addr ADDR:2377 --default-addr-pool
    /// POOL --default-addr-pool-mask-length MASK`; returns the node id.
    pub async fn init_swarm(&self, advertise: IpAddr, pool: &str, mask: u32) -> Result<String, DockerError> {
        let request = bollard::models::SwarmInitRequest {
            advertise_addr: Some(advertise.to_string()),
            listen_addr: Some(format!("{advertise}:2377")),
            default_addr_pool: Some(vec![pool.to_owned()]),
            subnet_size: Some(mask),
            ..Default::default()
        };
        self.api.init_swarm(request).await.map_err(api_error("initialising a swarm (docker swarm init)"))
    }

    /// The swarm's worker join token (managers only).
    pub async fn worker_token(&self) -> Result<String, DockerError> {
        let action = "asking the swarm's join token";
        let s = self.api.inspect_swarm().await.map_err(api_error(action))?;
        s.join_tokens.and_then(|t| t.worker).ok_or_else(|| DockerError::Unexpected {
            action: action.into(),
            detail: "no worker join token".into(),
        })
    }

    /// `docker swarm join --token TOKEN --advertise-addr ADDR MANAGER` (as a worker).
    pub async fn join_swarm(&self, manager: &str, advertise: IpAddr, token: &str) -> Result<(), DockerError> {
        let request = bollard::models::SwarmJoinRequest {
            advertise_addr: Some(advertise.to_string()),
            listen_addr: Some(format!("{advertise}:2377")),
            remote_addrs: Some(vec![manager.to_owned()]),
            join_token: Some(token.to_owned()),
            ..Default::default()
        };
        self.api.join_swarm(request).await.map_err(api_error(format!("joining the swarm of {manager}")))
    }

    /// `docker swarm leave --force`; an engine in no swarm is fine.
    pub async fn leave_swarm(&self) -> Result<(), DockerError> {
        let options = bollard::query_parameters::LeaveSwarmOptionsBuilder::default().force(true).build();
        match self.api.leave_swarm(Some(options)).await.map_err(api_error("leaving the swarm")) {
            Err(DockerError::Api { status: 503, .. }) => Ok(()),
            Err(DockerError::Api { message, .. }) if message.contains("not part of a swarm") => Ok(()),
            r => r,
        }
    }

    /// `docker node rm --force NODE` (managers); a missing node is fine.
    pub async fn remove_node(&self, node: &str) -> Result<(), DockerError> {
        let options = bollard::query_parameters::DeleteNodeOptions { force: true };
        ok_if_not_found(
            self.api
                .delete_node(node, Some(options))
                .await
                .map_err(api_error(format!("removing node {node}"))),
        )
    }

    /// Whether a network of that name (or id) exists.
    pub async fn network_exists(&self, name: &str) -> Result<bool, DockerError> {
        match self
            .api
            .inspect_network(name, None)
            .await
            .map_err(api_error(format!("inspecting network {name}")))
        {
            Ok(n) => Ok(n.name.as_deref() == Some(name) || n.id.as_deref() == Some(name)),
            Err(e) if e.is_not_found() => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// The id of network `name`.
    pub async fn network_id(&self, name: &str) -> Result<String, DockerError> {
        let action = format!("inspecting network {name}");
        let n = self.api.inspect_network(name, None).await.map_err(api_error(action.clone()))?;
        n.id.ok_or_else(|| DockerError::Unexpected { action, detail: "no network id".into() })
    }

    /// Copies `image` into the engine `to` (`docker save IMAGE | docker -H TO load`): no
    /// registry needed.
    pub async fn copy_image(&self, image: &str, to: &Docker) -> Result<(), DockerError> {
        let mut tar = Vec::new();
        let mut saved = self.api.export_image(image);
        while let Some(chunk) = saved.next().await {
            tar.extend_from_slice(&chunk.map_err(api_error(format!("saving image {image}")))?);
        }
        let options = bollard::query_parameters::ImportImageOptions { quiet: true, ..Default::default() };
        let mut loaded = to.api.import_image(options, bollard::body_full(tar.into()), None);
        while let Some(item) = loaded.next().await {
            item.map_err(api_error(format!("loading image {image} into the second engine")))?;
        }
        if !to.image_exists(image).await? {
            return Err(DockerError::Unexpected {
                action: format!("loading image {image} into the second engine"),
                detail: "the image is not there afterwards".into(),
            });
        }
        Ok(())
    }

    /// The engine's version and the API version in use, e.g. `20.10.24 (API 1.41)`.
    pub async fn server_version(&self) -> Result<String, DockerError> {
        let v = self.api.version().await.map_err(api_error("asking the engine version"))?;
        let version = v.version.unwrap_or_else(|| "unknown version".to_owned());
        let used = self.api.client_version();
        Ok(format!("{version} (API {}.{})", used.major_version, used.minor_version))
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

    /// Builds `context` (a tar archive holding a `Dockerfile`) into image `tag` with `labels`;
    /// returns once the engine reports the image. Build output goes to the debug log.
    pub async fn build_image(
        &self,
        tag: &str,
        context: Vec<u8>,
        labels: &HashMap<String, String>,
    ) -> Result<(), DockerError> {
        let options = BuildImageOptionsBuilder::new()
            .dockerfile("Dockerfile")
            .t(tag)
            .rm(true)
            .forcerm(true)
            .labels(labels)
            .build();
        let mut stream = self.api.build_image(options, None, Some(bollard::body_full(context.into())));
        let mut last = String::new();
        while let Some(item) = stream.next().await {
            let info = item.map_err(|e| match api_error(format!("building image {tag}"))(e) {
                DockerError::Api { message, .. } | DockerError::NotFound { message, .. } => {
                    DockerError::Build { image: tag.to_owned(), message }
                }
                other => other,
            })?;
            if let Some(detail) = info.error_detail {
                let message = detail.message.unwrap_or_else(|| "unknown error".to_owned());
                return Err(DockerError::Build { image: tag.to_owned(), message: one_line(&message) });
            }
            if let Some(s) = info.stream.as_deref().map(str::trim).filter(|s| !s.is_empty()) {
                log::debug!("docker build: {s}");
                last = s.to_owned();
            }
        }
        if !self.image_exists(tag).await? {
            return Err(DockerError::Build {
                image: tag.to_owned(),
                message: format!("no image after the build (last output: {last})"),
            });
        }
        Ok(())
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
            attachable: spec.attachable.then_some(true),
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
                cpuset_cpus: spec.cpuset.clone(),
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

    /// The running container `name` (or id), with its host pid; `NotFound` when there is none
    /// of that name, `Stopped` when it does not run.
    pub async fn running_container(&self, name: &str) -> Result<ContainerInfo, DockerError> {
        let action = format!("inspecting container {name}");
        let inspect = self.api.inspect_container(name, None).await.map_err(api_error(action.clone()))?;
        let shown = inspect.name.as_deref().map_or(name, |n| n.trim_start_matches('/')).to_owned();
        let state = inspect.state.as_ref();
        let pid = state.and_then(|s| s.pid).and_then(|p| u32::try_from(p).ok()).filter(|p| *p > 0);
        match (state.and_then(|s| s.running), pid) {
            (Some(true), Some(pid)) => Ok(ContainerInfo {
                id: inspect.id.clone().unwrap_or_default(),
                ip: container_ip(&inspect, ""),
                name: shown,
                pid,
            }),
            _ => Err(DockerError::Stopped {
                name: shown,
                state: state
                    .and_then(|s| s.status)
                    .map_or_else(|| "no state".to_owned(), |st| st.to_string()),
            }),
        }
    }

    /// Every running container with its host pid (one that stops meanwhile is left out).
    pub async fn running_containers(&self) -> Result<Vec<ContainerInfo>, DockerError> {
        let options = ListContainersOptionsBuilder::new().all(false).build();
        let list =
            self.api.list_containers(Some(options)).await.map_err(api_error("listing running containers"))?;
        let mut out = Vec::new();
        for id in list.into_iter().filter_map(|c| c.id) {
            match self.running_container(&id).await {
                Ok(c) => out.push(c),
                Err(DockerError::Stopped { .. } | DockerError::NotFound { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(out)
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

    /// Sends SIGKILL to a container's processes (best effort: a container that is gone or not
    /// running is fine, and the removal that follows reports what really went wrong).
    pub async fn kill_container(&self, id: &str) {
        let options = bollard::query_parameters::KillContainerOptionsBuilder::new().signal("SIGKILL").build();
        let _ = self.api.kill_container(id, Some(options)).await;
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

    /// Containers (running or not) carrying label key `key`, by id, with all their labels.
    pub async fn containers_with_label(
        &self,
        key: &str,
    ) -> Result<Vec<(String, HashMap<String, String>)>, DockerError> {
        let filter = HashMap::from([("label".to_owned(), vec![key.to_owned()])]);
        let options = ListContainersOptionsBuilder::new().all(true).filters(&filter).build();
        let list = self
            .api
            .list_containers(Some(options))
            .await
            .map_err(api_error("listing labelled containers"))?;
        Ok(list.into_iter().filter_map(|c| Some((c.id?, c.labels.unwrap_or_default()))).collect())
    }

    /// Networks carrying label key `key`, by id, with all their labels.
    pub async fn networks_with_label(
        &self,
        key: &str,
    ) -> Result<Vec<(String, HashMap<String, String>)>, DockerError> {
        let filter = HashMap::from([("label".to_owned(), vec![key.to_owned()])]);
        let options = ListNetworksOptionsBuilder::new().filters(&filter).build();
        let list =
            self.api.list_networks(Some(options)).await.map_err(api_error("listing labelled networks"))?;
        Ok(list.into_iter().filter_map(|n| Some((n.id?, n.labels.unwrap_or_default()))).collect())
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
