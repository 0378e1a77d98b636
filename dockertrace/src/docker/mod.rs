//! Docker: the Engine API wrapper ([`engine`]), the workload image built for it ([`image`]), and
//! the second engine of the overlay mode ([`daemon`]).
pub mod daemon;
pub mod engine;
pub mod image;

pub use engine::{
    ContainerInfo, ContainerSpec, Docker, DockerError, ExecOutput, NetworkInfo, NetworkSpec, SwarmState,
    LABEL, LABEL_PID, LABEL_START,
};
pub use image::{image_tag, ldd_libraries, ldd_missing, IMAGE_REPO};
