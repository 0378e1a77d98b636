//! Docker: the Engine API wrapper ([`engine`]) and the workload image built for it ([`image`]).
pub mod engine;
pub mod image;

pub use engine::{
    ContainerInfo, ContainerSpec, Docker, DockerError, ExecOutput, NetworkInfo, NetworkSpec, LABEL,
    LABEL_PID, LABEL_START,
};
pub use image::{image_tag, ldd_libraries, ldd_missing, IMAGE_REPO};
